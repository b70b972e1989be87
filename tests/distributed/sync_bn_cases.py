"""The SyncBatchNorm cases of test_distributed_sync_batchnorm.py: the data (NumPy only, made
the same on every rank), torch's full-batch results for them (computed once by the test, in
its own process, so that the ranks need not import torch) and the shards of each rank."""
import numpy as np

# name: (layer, input shape, rows per rank, momentum, affine, seed); a shard may be empty
CASES = {"bn2d": ("BatchNorm2d", (6, 3, 2, 3), [4, 2], 0.1, True, 10),
         "bn1d_empty_shard": ("BatchNorm1d", (5, 4), [5, 0], 0.3, False, 20),
         "bn1d_3d": ("BatchNorm1d", (7, 2, 3), [3, 4], None, True, 30)}
EAGER = ["bn2d", "bn1d_empty_shard", "bn1d_3d"]
COMPILED = ["bn1d_3d"]         # (BatchNorm2d compiled: the worker's ddp_compiled_step)
STEPS = 2
CONV_X = (4, 2, 5, 5)           # convert_ddp's input, two rows per rank


def arrays(name):
    """(x, upstream gradient, weight, bias) of a case; x has a large offset, where a one-pass
    sum-of-squares variance would lose digits."""
    kind, shape, _, _, _, seed = CASES[name]
    rng = np.random.default_rng(seed)
    c = shape[1]
    return (50.0 + rng.standard_normal(shape), rng.standard_normal(shape),
            rng.standard_normal(c), rng.standard_normal(c))


def conv_x():
    return np.random.default_rng(7).standard_normal(CONV_X)


def torch_refs(path):
    """torch's float64 BatchNorm on each full batch (outputs and input gradients of each step,
    x + step, the last step's weight/bias gradients, running stats, an eval output), and the
    conv net's gradients for convert_ddp, saved to path (.npz)."""
    import torch

    import tracejit as tj
    out = {}
    for name, (kind, shape, _, momentum, affine, _) in CASES.items():
        x, gy, w, b = arrays(name)
        bn = getattr(torch.nn, kind)(shape[1], momentum=momentum, affine=affine,
                                     dtype=torch.float64)
        if affine:
            with torch.no_grad():
                bn.weight.copy_(torch.tensor(w))
                bn.bias.copy_(torch.tensor(b))
        for s in range(STEPS):
            xt = torch.tensor(x + s, requires_grad=True)
            bn.zero_grad()
            y = bn(xt)
            (y * torch.tensor(gy)).sum().backward()
            out[f"{name}/y{s}"], out[f"{name}/gx{s}"] = y.detach().numpy(), xt.grad.numpy()
        if affine:
            out[f"{name}/gw"], out[f"{name}/gb"] = bn.weight.grad.numpy(), bn.bias.grad.numpy()
        out[f"{name}/rm"], out[f"{name}/rv"] = bn.running_mean.numpy(), bn.running_var.numpy()
        bn.eval()
        out[f"{name}/eval"] = bn(torch.tensor(x)).detach().numpy()
    net = conv_net(tj)
    ref = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3),
                              torch.nn.ReLU()).double()
    with torch.no_grad():
        for p, q in zip(ref.parameters(), net.parameters()):
            p.copy_(torch.tensor(q.detach().numpy()))
    ref(torch.tensor(conv_x())).sum().backward()
    for i, p in enumerate(ref.parameters()):
        out[f"conv/g{i}"] = p.grad.numpy()
    out["conv/rv"] = ref[1].running_var.numpy()
    np.savez(path, **out)


def conv_net(tj):
    """convert_ddp's net, initialized the same in every process."""
    tj.manual_seed(0)
    return tj.nn.Sequential(tj.nn.Conv2d(2, 3, 3, dtype=tj.float64),
                            tj.nn.BatchNorm2d(3, dtype=tj.float64), tj.nn.ReLU())
