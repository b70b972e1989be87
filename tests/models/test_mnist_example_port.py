"""The PyTorch examples' MNIST convnet and its train()/test() loops (Conv2d x2, ReLU,
F.max_pool2d, Dropout, torch.flatten, Linear, F.log_softmax, F.nll_loss; Adadelta with StepLR;
test-time `F.nll_loss(reduction='sum')` and `pred.eq(target.view_as(pred)).sum().item()`),
shrunk to 12x12 images, on tracejit and on torch from one state_dict. Dropout's p is set to 0
on both for training (the two libraries draw different masks); eval ignores it anyway."""
import numpy as np
import pytest

import tracejit as tj
from models.harness import training_step

torch = pytest.importorskip("torch")


def make_net(lib):
    nn, F = lib.nn, lib.nn.functional

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 4, 3, 1)
            self.conv2 = nn.Conv2d(4, 8, 3, 1)
            self.dropout1 = nn.Dropout(0.25)
            self.dropout2 = nn.Dropout(0.5)
            self.fc1 = nn.Linear(128, 16)
            self.fc2 = nn.Linear(16, 10)

        def forward(self, x):
            x = self.conv1(x)
            x = F.relu(x)
            x = self.conv2(x)
            x = F.relu(x)
            x = F.max_pool2d(x, 2)
            x = self.dropout1(x)
            x = lib.flatten(x, 1)
            x = self.fc1(x)
            x = F.relu(x)
            x = self.dropout2(x)
            x = self.fc2(x)
            output = F.log_softmax(x, dim=1)
            return output

    return Net()


def _run(lib, model, batches, test_batch, compiled):
    F = lib.nn.functional
    model.dropout1.p = model.dropout2.p = 0.0
    optimizer = lib.optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = lib.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)

    train_step = training_step(lib, model, optimizer,
                               lambda m, data, target: F.nll_loss(m(data), target),
                               compiled, clip=None)
    model.train()
    losses = []
    for data, target in batches:
        losses.append(train_step(lib.tensor(data), lib.tensor(target)).item())
        scheduler.step()
    model.eval()
    with lib.no_grad():
        data, target = lib.tensor(test_batch[0]), lib.tensor(test_batch[1])
        output = model(data)
        test_loss = F.nll_loss(output, target, reduction="sum").item()
        pred = output.argmax(dim=1, keepdim=True)
        correct = pred.eq(target.view_as(pred)).sum().item()
    state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    return losses, test_loss, correct, state, optimizer.param_groups[0]["lr"]


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled_step"])
def test_mnist_example_trains_and_tests_as_torch(compiled):
    rng = np.random.default_rng(0)
    batches = [(rng.standard_normal((6, 1, 12, 12)), rng.integers(0, 10, 6)) for _ in range(3)]
    test_batch = (rng.standard_normal((20, 1, 12, 12)), rng.integers(0, 10, 20))
    torch.manual_seed(1)
    tnet, net = make_net(torch).double(), make_net(tj).double()
    net.load_state_dict({k: v.detach().numpy() for k, v in tnet.state_dict().items()})
    want = _run(torch, tnet, batches, test_batch, False)
    got = _run(tj, net, batches, test_batch, compiled)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-10)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-10)
    assert got[2] == want[2] and got[4] == pytest.approx(want[4], rel=1e-15)
    for k, w in want[3].items():
        np.testing.assert_allclose(got[3][k], w, rtol=1e-9, atol=1e-12, err_msg=k)
