"""The prediction-gradient engine against references: autograd loops, Captum, exact answers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pgsweep import prediction_gradients
from pgsweep.errors import QueryError
from pgsweep.models.convnet import ConvNetSpec, ThesisConvNet
from pgsweep.pg import class_average, class_filter_scores, filter_scores, saliency
from pgsweep.testing.models import hand_set_convnet, hand_set_mlp, mlp, tiny_resnet


def reference_loop(model, images, layers, targets, output):
    """One fresh forward and one backward per target, the way Captum's target= works."""
    model.eval()
    modules = dict(model.named_modules())
    per_layer = {name: [] for name in layers}
    for target in targets:
        captured = {}
        handles = [
            modules[name].register_forward_hook(lambda m, i, o, name=name: captured.__setitem__(name, o))
            for name in layers if name != "input"
        ]
        x = images.clone().requires_grad_(True)
        logits = model(x)
        for handle in handles:
            handle.remove()
        captured["input"] = x
        y = torch.softmax(logits, dim=1) if output == "softmax" else logits
        grads = torch.autograd.grad(y[:, target].sum(), [captured[name] for name in layers])
        for name, grad in zip(layers, grads):
            per_layer[name].append(grad)
    return {name: torch.stack(grads) for name, grads in per_layer.items()}


def thesis_net(dtype=torch.float32, classes=15, seed=0):
    torch.manual_seed(seed)
    return ThesisConvNet(ConvNetSpec(num_classes=classes, input_mean=0.4, input_std=0.3)).to(dtype).eval()


CASES = {
    "thesis": (thesis_net, (6, 1, 60, 60), ["input", "conv1", "act1", "pool1", "act2", "act3", "act4", "fc2"]),
    "mlp": (lambda: mlp().eval(), (7, 12), ["input", "fc1", "act1", "act2"]),
    "resnet": (lambda: tiny_resnet().eval(), (3, 3, 16, 16), ["input", "conv1", "layer1.0", "layer1.1.conv2", "layer2", "fc"]),
}


@pytest.mark.parametrize("strategy, fast_conv", [("per_target", True), ("per_target", False), ("vmap", False)])
@pytest.mark.parametrize("output", ["softmax", "logit"])
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_equals_a_plain_autograd_loop(case, output, dtype, strategy, fast_conv):
    build, shape, layers = CASES[case]
    torch.manual_seed(1)
    model = build().to(dtype)
    images = torch.rand(shape, dtype=dtype)
    result = prediction_gradients(model, images, layers, "all", output, strategy=strategy, fast_conv=fast_conv)
    classes = result.predictions.shape[1]
    expected = reference_loop(model, images, layers, range(classes), output)
    tol = dict(rtol=1e-4, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)
    for name in layers:
        assert result.gradients[name].shape == expected[name].shape
        torch.testing.assert_close(result.gradients[name], expected[name], **tol)
        for norm in ("l2", "l1", "max"):
            ndim = result.activation_ndim(name)
            torch.testing.assert_close(result.filter_scores(name, norm), filter_scores(expected[name], ndim, norm), **tol)
            if ndim >= 2:
                torch.testing.assert_close(result.saliency(name, norm), saliency(expected[name], ndim, norm), **tol)


def test_activations_and_predictions_are_returned():
    model = thesis_net()
    images = torch.rand(4, 1, 60, 60)
    result = prediction_gradients(model, images, ["act2", "input"], targets=[3, 1])
    with torch.no_grad():
        expected_act2 = model.act2(model.conv2(model.pool1(model.act1(model.conv1(model.normalize(images))))))
        probabilities = torch.softmax(model(images), dim=1)
    torch.testing.assert_close(result.activations["act2"], expected_act2)
    torch.testing.assert_close(result.activations["input"], images)
    torch.testing.assert_close(result.predictions, probabilities)
    assert result.targets.tolist() == [3, 1] and result.target_index(1) == 1
    assert result.gradients["act2"].shape == (2, 4, 8, 24, 24)


@pytest.mark.parametrize("strategy", ["per_target", "vmap"])
@pytest.mark.parametrize("image_chunk, target_chunk", [(1, None), (None, 1), (3, 4), (5, 7)])
def test_chunking_does_not_change_the_result(image_chunk, target_chunk, strategy):
    model = thesis_net()
    images = torch.rand(7, 1, 60, 60)
    layers = ["input", "act1", "act3", "act4"]
    whole = prediction_gradients(model, images, layers)
    chunked = prediction_gradients(
        model, images, layers, image_chunk=image_chunk, target_chunk=target_chunk, strategy=strategy
    )
    for name in layers:
        torch.testing.assert_close(chunked.gradients[name], whole.gradients[name], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(chunked.activations[name], whole.activations[name])


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv2d(4, 8, 3, padding=1, groups=2),
        nn.Conv2d(6, 6, 3, padding=2, dilation=2, groups=3),
        nn.Conv2d(4, 4, 5, groups=4),
        nn.Conv2d(3, 5, 1),
        nn.Conv2d(4, 6, 3, padding=1, padding_mode="reflect"),
        nn.Conv2d(4, 6, 3, stride=2, padding=1),  # strided: left to the normal kernel
        nn.Conv1d(3, 5, 4, padding=2),
    ],
    ids=lambda conv: repr(conv),
)
def test_fast_conv_input_gradient_is_exact(conv, monkeypatch):
    from pgsweep.pg.fast_conv import ConvInputGradAsForward

    flips = []
    original = ConvInputGradAsForward._flip
    monkeypatch.setattr(ConvInputGradAsForward, "_flip", lambda self, w, g: flips.append(1) or original(self, w, g))
    model = nn.Sequential(conv, nn.Tanh(), nn.Flatten(), nn.LazyLinear(4)).double()
    shape = (3, conv.in_channels, 11) if isinstance(conv, nn.Conv1d) else (3, conv.in_channels, 11, 11)
    images = torch.randn(shape, dtype=torch.float64)
    model(images)  # materialise the lazy layer
    fast = prediction_gradients(model, images, ["input", "1"], fast_conv=True)
    assert bool(flips) == (conv.stride[0] == 1)  # the fast path ran, except where it must not
    plain = prediction_gradients(model, images, ["input", "1"], fast_conv=False)
    expected = reference_loop(model, images, ["input"], range(4), "softmax")
    torch.testing.assert_close(fast.gradients["input"], expected["input"], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(fast.gradients["input"], plain.gradients["input"], rtol=1e-12, atol=1e-14)


def test_model_mode_and_parameters_are_left_alone():
    model = thesis_net().train()
    before = [p.clone() for p in model.parameters()]
    prediction_gradients(model, torch.rand(2, 1, 60, 60), ["act1"])
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_hand_set_mlp_exact_answer():
    model = hand_set_mlp().double()
    x = torch.tensor([[0.3, -0.7], [1.2, 0.4]], dtype=torch.float64)
    result = prediction_gradients(model, x, ["act1", "input"], output="logit")
    w1, w2 = model.fc1.weight, model.fc2.weight
    hidden = torch.tanh(x @ w1.T + model.fc1.bias)  # (B, 2)
    # d z_c / d act1 = W2[c] for every image
    expected_act1 = w2[:, None, :].expand(3, 2, 2)
    # d z_c / d x = W2[c] diag(1 - h^2) W1
    expected_input = torch.einsum("ck,bk,kj->cbj", w2, 1 - hidden**2, w1)
    torch.testing.assert_close(result.gradients["act1"], expected_act1.detach())
    torch.testing.assert_close(result.gradients["input"], expected_input.detach())


def _central_differences(model, x, target, output, eps=1e-6):
    grad = torch.zeros_like(x)
    flat = grad.view(-1)
    for i in range(x.numel()):
        step = torch.zeros_like(x).view(-1)
        step[i] = eps
        step = step.view_as(x)
        with torch.no_grad():
            up, down = model(x + step), model(x - step)
            if output == "softmax":
                up, down = torch.softmax(up, 1), torch.softmax(down, 1)
        flat[i] = (up[:, target].sum() - down[:, target].sum()) / (2 * eps)
    return grad


@pytest.mark.parametrize("output", ["softmax", "logit"])
@pytest.mark.parametrize("build, shape", [(hand_set_mlp, (2, 2)), (hand_set_convnet, (2, 1, 5, 5))])
def test_input_gradient_matches_finite_differences(build, shape, output):
    model = build().double()
    torch.manual_seed(3)
    x = torch.rand(shape, dtype=torch.float64)
    result = prediction_gradients(model, x, ["input"], output=output)
    for t in range(3):
        expected = _central_differences(model, x, t, output)
        torch.testing.assert_close(result.gradients["input"][t], expected, rtol=1e-6, atol=1e-8)


def test_conv_activation_gradient_matches_finite_differences():
    """Perturb the act1 map itself (through a hook) and watch the prediction move."""
    model = hand_set_convnet().double()
    torch.manual_seed(4)
    x = torch.rand(1, 1, 5, 5, dtype=torch.float64)
    result = prediction_gradients(model, x, ["act1"], output="softmax")
    with torch.no_grad():
        base = model.act1(model.conv1(x))
    tail = lambda a: torch.softmax(model.fc1(model.flatten(model.pool1(a))), 1)  # noqa: E731
    eps = 1e-6
    for t in range(3):
        expected = torch.zeros_like(base)
        for i in range(base.numel()):
            step = torch.zeros(base.numel(), dtype=torch.float64)
            step[i] = eps
            step = step.view_as(base)
            expected.view(-1)[i] = (tail(base + step)[0, t] - tail(base - step)[0, t]) / (2 * eps)
        torch.testing.assert_close(result.gradients["act1"][t], expected, rtol=1e-6, atol=1e-9)


def test_softmax_and_logit_results_agree_through_the_softmax_jacobian():
    model = thesis_net(torch.float64)
    images = torch.rand(5, 1, 60, 60, dtype=torch.float64)
    layers = ["act1", "act4", "input"]
    probs = prediction_gradients(model, images, layers, output="softmax")
    logits = prediction_gradients(model, images, layers, output="logit")
    p = probs.predictions  # (B, C)
    for name in layers:
        dz = logits.gradients[name]  # (C, B, ...)
        extra = (1,) * (dz.dim() - 2)
        mix = (p.T.reshape(*p.T.shape, *extra) * dz).sum(dim=0, keepdim=True)  # sum_k p_k dz_k
        expected = p.T.reshape(*p.T.shape, *extra) * (dz - mix)  # p_c (dz_c - sum_k p_k dz_k)
        torch.testing.assert_close(probs.gradients[name], expected, rtol=1e-9, atol=1e-12)


def test_matches_captum():
    captum_attr = pytest.importorskip("captum.attr")
    model = thesis_net()
    images = torch.rand(4, 1, 60, 60)
    softmax_model = lambda x: torch.softmax(model(x), dim=1)  # noqa: E731
    result = prediction_gradients(model, images, ["act1", "act3", "act4", "input"])
    for target in range(15):
        for name in ("act1", "act3", "act4"):
            method = captum_attr.LayerGradientXActivation(softmax_model, model.get_submodule(name), multiply_by_inputs=False)
            expected = method.attribute(images, target=target)
            torch.testing.assert_close(result.gradients[name][target], expected, rtol=1e-4, atol=1e-7)
        saliency_map = captum_attr.Saliency(softmax_model).attribute(images, target=target, abs=False)
        torch.testing.assert_close(result.gradients["input"][target], saliency_map, rtol=1e-4, atol=1e-7)


# ---------------------------------------------------------------- reductions

def test_filter_and_saliency_reductions_by_hand():
    pg = torch.tensor([[[[3.0, -4.0], [0.0, 0.0]], [[1.0, 1.0], [-1.0, 1.0]]]])  # (1 image, 2 filters, 2, 2)
    assert filter_scores(pg, 3, "l2").tolist() == [[5.0, 2.0]]
    assert filter_scores(pg, 3, "l1").tolist() == [[7.0, 4.0]]
    assert filter_scores(pg, 3, "max").tolist() == [[4.0, 1.0]]
    torch.testing.assert_close(saliency(pg, 3, "l1"), torch.tensor([[[4.0, 5.0], [1.0, 1.0]]]))
    assert filter_scores(torch.tensor([[-2.0, 0.5]]), 1, "l2").tolist() == [[2.0, 0.5]]
    with pytest.raises(QueryError, match="unknown norm 'l3'"):
        filter_scores(pg, 3, "l3")
    with pytest.raises(QueryError, match="spatial"):
        saliency(torch.zeros(2, 3), 1)


def test_class_average_and_the_thesis_order():
    pg = torch.tensor([[[[1.0]], [[3.0]], [[-2.0]]]]).reshape(1, 3, 1, 1, 1)  # (T=1, B=3, F=1, 1, 1)
    labels = torch.tensor([0, 0, 1])
    means = class_average(pg, labels, num_classes=3)
    assert means.shape == (1, 3, 1, 1, 1)
    assert means[0, 0].item() == 2.0 and means[0, 1].item() == -2.0 and means[0, 2].isnan().all()
    pg = torch.tensor([1.0, -1.0]).reshape(1, 2, 1, 1, 1)  # opposite PGs cancel only when averaged first
    same_class = torch.tensor([0, 0])
    assert class_filter_scores(pg, same_class, 1, 3, "l2", "average_then_norm")[0, 0].item() == 0.0
    assert class_filter_scores(pg, same_class, 1, 3, "l2", "norm_then_average")[0, 0].item() == 1.0
    with pytest.raises(QueryError, match="unknown order"):
        class_filter_scores(pg, same_class, 1, 3, "l2", "sideways")


def test_result_class_scores_match_the_functions():
    model = thesis_net()
    images = torch.rand(6, 1, 60, 60)
    labels = torch.tensor([0, 1, 1, 2, 2, 2])
    result = prediction_gradients(model, images, ["act2"])
    scores = result.class_filter_scores("act2", labels)
    assert scores.shape == (15, 15, 8)
    manual = torch.linalg.vector_norm(result.gradients["act2"][2, 3:6].mean(dim=0), dim=(-2, -1))
    torch.testing.assert_close(scores[2, 2], manual)


# ---------------------------------------------------------------- errors before any work

def test_unknown_layer_lists_the_valid_ones():
    with pytest.raises(QueryError, match=r"unknown layer 'conv9'; valid layers: input, normalize, conv1, act1"):
        prediction_gradients(thesis_net(), torch.rand(2, 1, 60, 60), ["act1", "conv9"])


@pytest.mark.parametrize("targets", [15, [0, -1], [3, 40]])
def test_class_out_of_range(targets):
    with pytest.raises(QueryError, match="out of range: the model has 15 classes"):
        prediction_gradients(thesis_net(), torch.rand(2, 1, 60, 60), ["act1"], targets=targets)


def test_reused_module_is_refused():
    model = tiny_resnet().eval()
    with pytest.raises(QueryError, match=r"'layer1.0.relu' is called 2 times"):
        prediction_gradients(model, torch.rand(2, 3, 16, 16), ["layer1.0.relu"])


class _WithSpare(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = mlp()
        self.spare = nn.Linear(3, 3)  # registered, never used

    def forward(self, x):
        return self.body(x)


def test_uncalled_module_is_refused():
    model = _WithSpare()
    with pytest.raises(QueryError, match="'spare' is never called"):
        prediction_gradients(model, torch.rand(2, 12), ["spare"])


def test_output_changed_in_place_is_refused():
    model = tiny_resnet().eval()  # bn1's output is overwritten by ReLU(inplace=True)
    with pytest.raises(QueryError, match="'layer1.0.bn1''s output is changed in place"):
        prediction_gradients(model, torch.rand(2, 3, 16, 16), ["layer1.0.bn1"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"output": "probability"}, "output must be one of"),
        ({"targets": "some"}, "targets must be 'all'"),
        ({"targets": []}, "no target classes"),
        ({"layers": []}, "no layers"),
        ({"image_chunk": 0}, "image_chunk must be a positive"),
        ({"strategy": "fastest"}, "strategy must be one of"),
    ],
)
def test_bad_requests(kwargs, message):
    arguments = {"layers": ["act1"], **kwargs}
    with pytest.raises(QueryError, match=message):
        prediction_gradients(thesis_net(), torch.rand(2, 1, 60, 60), **arguments)
