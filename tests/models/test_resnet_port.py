"""A torchvision-style ResNet (BasicBlock: conv3x3 without bias, BatchNorm2d, ReLU(inplace=True),
the residual `out += identity`, a 1x1-conv downsample; stem with MaxPool2d(3, 2, 1);
AdaptiveAvgPool2d((1, 1)), torch.flatten, Linear; kaiming_normal_/constant_ init over
`self.modules()`), written once against `lib` and run on tracejit and on torch from the same
state_dict. Three training steps (zero_grad, forward, CrossEntropyLoss, backward, SGD with
momentum and weight decay) leave the same losses, gradients, parameters and BatchNorm statistics,
eagerly, with `tj.compile(model)` and with the whole step compiled; eval mode then gives the same
logits."""
import numpy as np
import pytest

import tracejit as tj

torch = pytest.importorskip("torch")

STEPS = 3
TOL = {"float32": dict(rtol=1e-4, atol=1e-5), "float64": dict(rtol=1e-10, atol=1e-12)}


def make_resnet(lib, layers=(2, 1), num_classes=5, width=8):
    """torchvision.models.resnet's BasicBlock and ResNet, shrunk; `lib` is torch or tracejit."""
    nn = lib.nn

    def conv3x3(in_planes, out_planes, stride=1):
        return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1,
                         bias=False)

    def conv1x1(in_planes, out_planes, stride=1):
        return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)

    class BasicBlock(nn.Module):
        expansion = 1

        def __init__(self, inplanes, planes, stride=1, downsample=None):
            super().__init__()
            self.conv1 = conv3x3(inplanes, planes, stride)
            self.bn1 = nn.BatchNorm2d(planes)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = conv3x3(planes, planes)
            self.bn2 = nn.BatchNorm2d(planes)
            self.downsample = downsample
            self.stride = stride

        def forward(self, x):
            identity = x
            out = self.conv1(x)
            out = self.bn1(out)
            out = self.relu(out)
            out = self.conv2(out)
            out = self.bn2(out)
            if self.downsample is not None:
                identity = self.downsample(x)
            out += identity
            out = self.relu(out)
            return out

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.inplanes = width
            self.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
            self.layer1 = self._make_layer(width, layers[0])
            self.layer2 = self._make_layer(width * 2, layers[1], stride=2)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(width * 2 * BasicBlock.expansion, num_classes)
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.constant_(m.weight, 1)
                    nn.init.constant_(m.bias, 0)

        def _make_layer(self, planes, blocks, stride=1):
            downsample = None
            if stride != 1 or self.inplanes != planes * BasicBlock.expansion:
                downsample = nn.Sequential(conv1x1(self.inplanes, planes, stride),
                                           nn.BatchNorm2d(planes))
            layers_ = [BasicBlock(self.inplanes, planes, stride, downsample)]
            self.inplanes = planes * BasicBlock.expansion
            for _ in range(1, blocks):
                layers_.append(BasicBlock(self.inplanes, planes))
            return nn.Sequential(*layers_)

        def forward(self, x):
            x = self.conv1(x)
            x = self.bn1(x)
            x = self.relu(x)
            x = self.maxpool(x)
            x = self.layer1(x)
            x = self.layer2(x)
            x = self.avgpool(x)
            x = lib.flatten(x, 1)
            return self.fc(x)

    return ResNet()


def _state(model) -> dict:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def _run(lib, model, mode, xs, ys, dtype):
    """The training loop as the ImageNet example writes it; `mode` says how tracejit runs it."""
    tensor = torch.tensor if lib is torch else tj.tensor
    forward = tj.compile(model) if mode == "compiled_model" else model
    optimizer = lib.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    criterion = lib.nn.CrossEntropyLoss()

    def step(images, target):
        optimizer.zero_grad()
        output = forward(images)
        loss = criterion(output, target)
        loss.backward()
        optimizer.step()
        return loss
    if mode == "compiled_step":
        step = tj.compile(step)
    model.train()
    losses = [step(tensor(x.astype(dtype)), tensor(y)).item() for x, y in zip(xs, ys)]
    grads = {k: p.grad.numpy().copy() for k, p in model.named_parameters()}
    model.eval()
    with lib.no_grad():
        evaluated = forward(tensor(xs[0].astype(dtype))).numpy()
    return losses, grads, _state(model), evaluated


@pytest.mark.parametrize("mode,dtype", [
    ("eager", "float32"), ("eager", "float64"), ("compiled_model", "float64"),
    ("compiled_step", "float32"), ("compiled_step", "float64")])
def test_resnet_trains_with_sgd_momentum_as_torch(mode, dtype):
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((4, 3, 9, 9)) for _ in range(STEPS)]
    ys = [rng.integers(0, 5, 4) for _ in range(STEPS)]
    torch.manual_seed(0)
    tmodel = make_resnet(torch).to(getattr(torch, dtype))
    model = make_resnet(tj).to(getattr(tj, dtype))
    assert [k for k, _ in model.named_parameters()] == [k for k, _ in tmodel.named_parameters()]
    model.load_state_dict(_state(tmodel))
    want = _run(torch, tmodel, "eager", xs, ys, dtype)
    got = _run(tj, model, mode, xs, ys, dtype)
    tol = TOL[dtype]
    np.testing.assert_allclose(got[0], want[0], **tol)
    for what, g, w in (("grad", got[1], want[1]), ("state", got[2], want[2])):
        assert list(g) == list(w), what
        for name in w:
            assert g[name].dtype == w[name].dtype, (what, name)
            np.testing.assert_allclose(g[name], w[name], err_msg=f"{what} {name}", **tol)
    assert got[2]["layer1.0.bn1.num_batches_tracked"] == STEPS
    np.testing.assert_allclose(got[3], want[3], **tol)
