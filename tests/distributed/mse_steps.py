"""The DDP training step the distributed workers compile: the mean squared error of ddp(x)
against y, backward and one optimizer step."""


def mse_step(ddp, opt):
    """The step as a plain function (the caller compiles it or not)."""
    def step(x, y):
        opt.zero_grad()
        loss = ((ddp(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        return loss
    return step
