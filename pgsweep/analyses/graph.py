"""A network as a torch.fx graph, run node by node, so a change recomputes only what depends on it.

Any network torch.fx can trace works (residual blocks included): the knockout replays a
step from the layer whose mask changed, keeping every other node's value. A network that
does not trace gets None here, and its caller falls back to the plain path with one logged
line saying why.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Sequence

import torch
from torch import fx, nn

log = logging.getLogger(__name__)

_TRACED: "weakref.WeakKeyDictionary[nn.Module, tuple[fx.GraphModule | None, str]]" = weakref.WeakKeyDictionary()


def traced(network: nn.Module) -> tuple[fx.GraphModule | None, str]:
    """(the network's fx graph module, "") or (None, why it does not trace); cached per network."""
    if network not in _TRACED:
        try:
            _TRACED[network] = (fx.symbolic_trace(network), "")
        except Exception as error:  # noqa: BLE001  (fx raises many kinds for dynamic control flow)
            first = str(error).splitlines()[0] if str(error) else ""
            _TRACED[network] = (None, f"{type(error).__name__}: {first}"[:300])
            log.info("torch.fx cannot trace %s (%s): its knockout and sweep take the plain path",
                     type(network).__name__, _TRACED[network][1])
    return _TRACED[network]


class GraphReplay:
    """Run a traced network node by node; `layers` are call_module nodes whose outputs get masked.

    values: node -> its value in the last run; `recompute(changed)` reruns only the nodes
    downstream of the changed layers, in topological order.
    """

    def __init__(self, network: nn.Module, graph_module: fx.GraphModule, layers: Sequence[str]) -> None:
        self.network, self.graph_module = network, graph_module
        self.modules = dict(graph_module.named_modules())
        self.nodes = list(graph_module.graph.nodes)
        placeholders = [n for n in self.nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            raise ValueError(f"forward takes {len(placeholders)} inputs, not one image batch")
        self.input = placeholders[0]
        self.output = next(n for n in self.nodes if n.op == "output")
        position = {node: i for i, node in enumerate(self.nodes)}
        self.layer_nodes = []
        for layer in layers:
            hits = [n for n in self.nodes if n.op == "call_module" and n.target == layer]
            if len(hits) != 1:
                raise ValueError(f"layer '{layer}' is called {len(hits)} times in the traced graph")
            self.layer_nodes.append(hits[0])
        self.layer_of = {node: j for j, node in enumerate(self.layer_nodes)}
        self.downstream: list[list[int]] = []  # per layer: indices of every node that depends on it
        for node in self.layer_nodes:
            seen, stack = set(), list(node.users)
            while stack:
                user = stack.pop()
                if user not in seen:
                    seen.add(user)
                    stack.extend(user.users)
            self.downstream.append(sorted(position[n] for n in seen))
        self.constants = {n: _attribute(graph_module, n.target) for n in self.nodes if n.op == "get_attr"}

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        # the root's forward pre-hooks (e.g. pgsweep's input standardisation) are not in the graph
        for hook in self.network._forward_pre_hooks.values():
            result = hook(self.network, (x,))
            if result is not None:
                x = result[0] if isinstance(result, tuple) else result
        return x

    def run_node(self, node: fx.Node, values: dict):
        args = fx.node.map_arg(node.args, values.__getitem__)
        kwargs = fx.node.map_arg(node.kwargs, values.__getitem__)
        if node.op == "call_module":
            return self.modules[node.target](*args, **kwargs)
        if node.op == "call_function":
            return node.target(*args, **kwargs)
        if node.op == "call_method":
            return getattr(args[0], node.target)(*args[1:], **kwargs)
        if node.op == "get_attr":
            return self.constants[node]
        if node.op == "output":
            return args[0]
        raise ValueError(f"unexpected node {node.op}")

    def run(self, x: torch.Tensor, mask) -> tuple[dict, dict]:
        """Every node's value for input x; mask(j, raw) gives layer j's output from its raw value.

        Returns (values, raw): raw[j] is layer j's output before masking.
        """
        values, raw = {self.input: self.prepare_input(x)}, {}
        for node in self.nodes:
            if node.op != "placeholder":
                self._update(node, values, raw, mask)
        return values, raw

    def recompute(self, values: dict, raw: dict, changed: set[int], mask) -> None:
        """Update `values` (and `raw`) in place after the masks of layers `changed` changed."""
        for j in changed:
            values[self.layer_nodes[j]] = mask(j, raw[j])
        todo = sorted(set().union(*(self.downstream[j] for j in changed)))
        for i in todo:
            self._update(self.nodes[i], values, raw, mask)

    def _update(self, node, values: dict, raw: dict, mask) -> None:
        """Evaluate one node from `values`; an analysed layer keeps its raw output and gets masked."""
        value = self.run_node(node, values)
        if node in self.layer_of:
            j = self.layer_of[node]
            raw[j] = value
            value = mask(j, value)
        values[node] = value


def _attribute(module: nn.Module, target: str):
    value = module
    for part in target.split("."):
        value = getattr(value, part)
    return value


def graph_replay(network: nn.Module, layers: Sequence[str], purpose: str) -> GraphReplay | None:
    """A GraphReplay of `network`, or None with one logged line saying why `purpose` takes the plain path."""
    graph_module, _ = traced(network)  # a failure is logged once, there
    if graph_module is None:
        return None
    try:
        return GraphReplay(network, graph_module, layers)
    except ValueError as error:
        log.info("%s: %s; using the plain path", purpose, error)
        return None
