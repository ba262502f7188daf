"""Which modules of any nn.Module are its "layers": the blocks whose inputs resflow measures.

`find_blocks(model, blocks)` returns [(qualified name, module)] in registration order, from:
  None      discovery: the model's repeated blocks (below);
  patterns  globs over qualified module names, `*` within one name part (`layer*.*` is
            `layer1.0`, not `layer1.0.conv1`), `**` across parts, `?` one character;
  modules   submodules of `model`, given directly.

Discovery looks at the children of every nn.ModuleList / nn.Sequential for runs of two or more
consecutive children of one class that have parameters: GPT-2's `transformer.h.*`, torchvision
ResNet's `layer1.0 ... layer4.N`. Where such runs are themselves a list of stages (Hugging Face's
ResNet `encoder.stages.*`, ConvNeXT), the blocks are the stages' runs, flattened across stages in
order: `encoder.stages.0.layers.0 ...` (`discover` says exactly how). Pass `blocks=` where that
guesses wrong.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from torch import nn

from resflow.errors import ConfigError
from resflow.models.stack import Site


def _signature(module: nn.Module) -> tuple:
    return tuple((name, tuple(p.shape)) for name, p in module.named_parameters())


def _runs(model: nn.Module) -> list[tuple[type, int, list]]:
    """(class, depth of the container, [(name, module)]) for every run of >= 2 consecutive
    same-class children with parameters, in a ModuleList or Sequential, in registration order."""
    out = []
    for cname, container in model.named_modules():
        if not isinstance(container, (nn.ModuleList, nn.Sequential)):
            continue
        depth = cname.count(".") + 1 if cname else 0
        run: list = []
        for child_name, child in [*container.named_children(), (None, None)]:
            if run and (child is None or type(child) is not type(run[0][1])):
                if len(run) >= 2:
                    out.append((type(run[0][1]), depth, run))
                run = []
            if child is not None and any(True for _ in child.parameters()):
                run.append((f"{cname}.{child_name}" if cname else child_name, child))
            elif child is not None:
                run = []
    return out


def _repeated(run) -> bool:
    """Two members of the run have the same parameter shapes (blocks; not stages of growing width)."""
    sigs = [_signature(m) for _, m in run]
    return len(set(sigs)) < len(sigs)


def _pick(runs) -> type:
    """The class with the most members over `runs` (a tie: the one nearer the root)."""
    score: dict = {}
    for cls, depth, run in runs:
        total, d = score.get(cls, (0, 0))
        score[cls] = (total + len(run), min(d, -depth) if total else -depth)
    return max(score, key=lambda c: score[c])


def discover(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's repeated blocks; a ResflowError naming candidates if there are none.

    Runs nested in no other run's member are level 0 (GPT-2's `h`, a ResNet's stages), runs inside
    a level-0 member level 1 (a stage's blocks). The level-0 class with the most members is taken,
    unless it is a list of stages: none of its runs repeats a member's shapes and its members hold
    runs themselves; then the level-1 class with the most members (not deeper: a block's own
    sub-layers, like a bottleneck's convolutions, are not blocks).
    """
    runs = _runs(model)
    if not runs:
        raise ConfigError(
            f"no repeated blocks found in {type(model).__name__} (no nn.ModuleList/nn.Sequential "
            f"holds two same-class children with parameters); pass blocks=[...] naming them, "
            f"e.g. one of: {_candidates(model)}"
        )
    members = [name for _, _, run in runs for name, _ in run]

    def level(run) -> int:
        first = run[2][0][0]
        return sum(first.startswith(m + ".") for m in members)

    level0 = [r for r in runs if level(r) == 0]
    chosen = _pick(level0)
    mine = [r for r in level0 if r[0] is chosen]
    inner = [r for r in runs if level(r) == 1]
    if inner and not any(_repeated(r[2]) for r in mine):
        chosen = _pick(inner)
        mine = [r for r in inner if r[0] is chosen]
    seen, out = set(), []
    for _, _, run in mine:
        for name, module in run:
            if id(module) not in seen:
                seen.add(id(module))
                out.append((name, module))
    return out


def _candidates(model: nn.Module, limit: int = 8) -> str:
    """Some module names a user could pass as blocks: containers first, then the top-level children."""
    names = [n for n, m in model.named_modules() if n and isinstance(m, (nn.ModuleList, nn.Sequential))]
    names += [n for n, _ in model.named_children() if n not in names]
    if not names:
        return "(the model has no submodules)"
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def glob_regex(pattern: str) -> re.Pattern:
    """A glob over dotted names: `*` within one part, `**` across parts, `?` one character."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^.]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^.]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def find_blocks(model: nn.Module, blocks=None) -> list[tuple[str, nn.Module]]:
    """[(qualified name, module)] of the blocks to measure: discovered, matched, or given (module doc)."""
    if not isinstance(model, nn.Module):
        raise ConfigError(f"expected a torch.nn.Module, got {type(model).__name__}")
    if blocks is None:
        return discover(model)
    if isinstance(blocks, (str, nn.Module)):
        blocks = [blocks]
    if not isinstance(blocks, Iterable):
        raise ConfigError(f"blocks: expected glob patterns or modules, got {type(blocks).__name__}")
    blocks = list(blocks)
    named = [(n, m) for n, m in model.named_modules(remove_duplicate=True) if n]
    out, seen = [], set()
    if all(isinstance(b, str) for b in blocks):
        for pattern in blocks:
            regex = glob_regex(pattern)
            hits = [(n, m) for n, m in named if regex.match(n)]
            if not hits:
                raise ConfigError(
                    f"blocks: the pattern {pattern!r} matches no module of {type(model).__name__}; "
                    f"module names look like: {_candidates(model)}"
                )
            out += [(n, m) for n, m in hits if id(m) not in seen and not seen.add(id(m))]
        order = {id(m): i for i, (_, m) in enumerate(named)}
        return sorted(out, key=lambda nm: order[id(nm[1])])
    if all(isinstance(b, nn.Module) for b in blocks):
        name_of = {id(m): n for n, m in named}
        for b in blocks:
            if id(b) not in name_of:
                raise ConfigError(f"blocks: a {type(b).__name__} given is not a submodule of {type(model).__name__}")
            if id(b) not in seen:
                seen.add(id(b))
                out.append((name_of[id(b)], b))
        if not out:
            raise ConfigError("blocks: an empty list; give glob patterns or modules, or None to discover them")
        return out
    raise ConfigError(
        f"blocks: give glob patterns (strings) or modules, not a mix of {sorted({type(b).__name__ for b in blocks})}"
    )


def block_sites(blocks: list[tuple[str, nn.Module]]) -> list[Site]:
    """One template Site per block (Recorder(by_call=True) numbers the calls); parameters named
    relative to their block, each block's own (a block nested in another block keeps its
    parameters; the outer one has the rest)."""
    owned: dict[int, str] = {}
    for name, module in blocks:  # a parameter belongs to the innermost block holding it (the longest name)
        for p in module.parameters():
            if len(name) > len(owned.get(id(p), "")):
                owned[id(p)] = name
    sites = []
    for name, module in blocks:
        params = tuple((n, p) for n, p in module.named_parameters() if owned[id(p)] == name)
        sites.append(Site(0, "block", module, params, name))
    return sites


def outside_params(model: nn.Module, blocks: list[tuple[str, nn.Module]]) -> list[tuple[str, nn.Parameter]]:
    """The model's parameters in no block (embeddings, a head, a final norm), by qualified name."""
    inside = {id(p) for _, m in blocks for p in m.parameters()}
    return [(n, p) for n, p in model.named_parameters() if id(p) not in inside]


def family(blocks: list[tuple[str, nn.Module]]) -> str:
    """The blocks' class name (the `block` column), or the names joined by '+' if they differ."""
    return "+".join(dict.fromkeys(type(m).__name__ for _, m in blocks))
