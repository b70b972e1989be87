"""Gradients of a model's squared-output loss, with a grad_sync syncer installed for the one
backward or without one: what the bucket-sync tests compare (on any device)."""
from tracejit.runtime import grad_sync


def grads(model, x, syncer=None) -> list:
    for p in model.parameters():
        p.grad = None
    if syncer is not None:
        grad_sync.SYNCERS.append(syncer)
    try:
        (model(x) ** 2).sum().backward()
    finally:
        if syncer is not None:
            grad_sync.SYNCERS.remove(syncer)
    return [p.grad.to("cpu").numpy().copy() for p in model.parameters()]
