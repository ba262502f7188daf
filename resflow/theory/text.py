"""The lines `resflow theory CONFIG` prints: the prediction alone, from numbers only (no torch)."""

from __future__ import annotations

import math

from resflow.theory.predict import critical_scale, predict


def _g(x) -> str:
    if x is None:
        return "—"
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.6g}"


def describe(cfg) -> list[str]:
    m = cfg.model
    pred = predict(cfg)
    head = (
        f"{cfg.name}: {m.factory}, loss {cfg.loss}"
        if getattr(m, "factory", None) is not None
        else f"{cfg.name}: depth {m.depth}, width {m.width}, {m.theory_words()}, loss {cfg.loss}"
    )
    if not pred:
        return [head, f"no prediction: {pred.reason}"]
    lines = [head, f"theory: {pred.kind} — {pred.model}"]
    if pred.sigma_w2 is not None:
        lines.append(f"σ_w² = {_g(pred.sigma_w2)}, σ_b² = {_g(pred.sigma_b2)}")
    if pred.chi1 is not None:
        lines += [
            f"q* = {_g(pred.q_star)}",
            f"χ₁ = {_g(pred.chi1)}",
            "ξ = ∞ (critical: |χ₁ − 1| < 1e-3)"
            if pred.phase == "critical"
            else f"ξ = −1/ln χ₁ = {_g(pred.depth_scale)} layers (depth scale of ‖δ‖²; < 0: it grows)",
            f"phase: {pred.phase}",
        ]
    if pred.critical_sigma_w2 is not None:
        lines.append(f"critical σ_w² at σ_b² = {_g(pred.sigma_b2)}: {_g(pred.critical_sigma_w2)} (edge of chaos)")
        scale, _ = critical_scale(m)
        if scale is not None:
            lines.append(f"critical model.init.scale for init {m.init.scheme}: {_g(scale)} (this config: {m.init.scale:g})")
    lines += [
        f"predicted first/last ‖∂loss/∂x‖ at depth {m.depth}: {pred.grad_ratio:.4g}",
        f"predicted gain per layer: {pred.gain_per_layer:.6g}",
    ]
    lines += [f"note: {n}" for n in pred.notes]
    return lines
