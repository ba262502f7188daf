"""Predicted gradient flow at initialisation: closed forms and wide-network (mean-field) recursions.

Pure functions over numbers, numpy only (no torch, no pandas): `resflow theory` stays instant.

    predict(config) -> Prediction | NoPrediction

A `Prediction` holds, for every site l = 0 … depth−1, the predicted ‖∂loss/∂x_l‖ relative to the
last site's (`ratios`), built from per-block factors ‖δ_l‖² = f_l·‖δ_{l+1}‖². Where no theory here
holds, `NoPrediction(reason)` says why; it never guesses.

Mean-field (Poole et al. 2016; Schoenholz et al. 2017): weights N(0, σ_w²/n), biases N(0, σ_b²),
width n → ∞. A unit's pre-activation is Gaussian with variance q; the length map
q ↦ σ_w²·E[φ(√q z)²] + σ_b² moves q layer by layer towards its fixed point q*, and
χ(q) = σ_w²·E[φ'(√q z)²] is the factor by which ‖δ‖² grows per layer going back. The transient q^l
is used layer by layer, not only q*. Expectations over z ~ N(0, 1) use Gauss–Hermite quadrature
for smooth activations; for activations with a kink (relu, leaky_relu, elu, selu) Gauss–Legendre
on each side of the kink, since Gauss–Hermite converges only algebraically there (3e-3 error on
elu'² with 201 nodes, 1e-14 this way with 60).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
from numpy.polynomial.hermite_e import hermegauss
from numpy.polynomial.legendre import leggauss

# ---------------------------------------------------------------------------------------------
# Activations by formula (PyTorch's definitions and default constants)

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
LEAKY_SLOPE = 0.01
SOFTPLUS_THRESHOLD = 20.0  # F.softplus returns x itself above this (beta = 1)

_erf = np.frompyfunc(math.erf, 1, 1)


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # stable for large |x|


def _normal_cdf(x):
    return 0.5 * (1.0 + _erf(np.asarray(x, dtype=float) / math.sqrt(2.0)).astype(float))


def _normal_pdf(x):
    return np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


@dataclass(frozen=True)
class Activation:
    phi: Callable[[np.ndarray], np.ndarray]
    dphi: Callable[[np.ndarray], np.ndarray]
    kink: bool = False  # not smooth at 0: integrate each side separately


ACTIVATIONS: dict[str, Activation] = {
    "identity": Activation(lambda x: x, lambda x: np.ones_like(x)),
    "tanh": Activation(np.tanh, lambda x: 1.0 - np.tanh(x) ** 2),
    "relu": Activation(lambda x: np.maximum(x, 0.0), lambda x: (x > 0).astype(float), kink=True),
    # exact (erf) GELU, as F.gelu's default: x·Φ(x), derivative Φ(x) + x·ϕ(x)
    "gelu": Activation(lambda x: x * _normal_cdf(x), lambda x: _normal_cdf(x) + x * _normal_pdf(x)),
    "sigmoid": Activation(_sigmoid, lambda x: _sigmoid(x) * (1.0 - _sigmoid(x))),
    "silu": Activation(lambda x: x * _sigmoid(x), lambda x: _sigmoid(x) * (1.0 + x * (1.0 - _sigmoid(x)))),
    "leaky_relu": Activation(
        lambda x: np.where(x > 0, x, LEAKY_SLOPE * x), lambda x: np.where(x > 0, 1.0, LEAKY_SLOPE), kink=True
    ),
    "elu": Activation(
        lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
        lambda x: np.where(x > 0, 1.0, np.exp(np.minimum(x, 0.0))),
        kink=True,
    ),
    "selu": Activation(
        lambda x: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(np.minimum(x, 0.0))),
        lambda x: SELU_SCALE * np.where(x > 0, 1.0, SELU_ALPHA * np.exp(np.minimum(x, 0.0))),
        kink=True,
    ),
    "softplus": Activation(
        lambda x: np.where(x > SOFTPLUS_THRESHOLD, x, np.log1p(np.exp(np.minimum(x, SOFTPLUS_THRESHOLD)))),
        lambda x: np.where(x > SOFTPLUS_THRESHOLD, 1.0, _sigmoid(x)),
    ),
}

# ---------------------------------------------------------------------------------------------
# Gaussian expectations

HERMITE_NODES = 101
LEGENDRE_NODES = 80
TAIL = 12.0  # standard deviations; the normal density beyond is below 1e-31

_HZ, _HW = hermegauss(HERMITE_NODES)
_HW = _HW / math.sqrt(2.0 * math.pi)  # weights of E over z ~ N(0, 1)
_LX, _LW = leggauss(LEGENDRE_NODES)


def _legendre_nodes(a: float, b: float) -> tuple[np.ndarray, np.ndarray]:
    z = 0.5 * (b - a) * _LX + 0.5 * (a + b)
    return z, 0.5 * (b - a) * _LW * _normal_pdf(z)


def gauss_expect(f: Callable[[np.ndarray], np.ndarray], var: float, mean: float = 0.0, kink: bool = False) -> float:
    """E[f(mean + √var·z)] for z ~ N(0, 1). `kink`: f is not smooth at 0 (split the integral there)."""
    sd = math.sqrt(max(var, 0.0))
    if sd == 0.0:
        return float(f(np.array([mean]))[0])
    if not kink:
        return float(np.dot(_HW, f(mean + sd * _HZ)))
    z0 = -mean / sd  # where the argument crosses 0
    pieces = [(-TAIL, z0), (z0, TAIL)] if -TAIL < z0 < TAIL else [(-TAIL, TAIL)]
    total = 0.0
    for a, b in pieces:
        z, w = _legendre_nodes(a, b)
        total += float(np.dot(w, f(mean + sd * z)))
    return total


def second_moment(act: str, var: float, mean: float = 0.0) -> float:
    """E[φ(h)²], h ~ N(mean, var)."""
    a = ACTIVATIONS[act]
    return gauss_expect(lambda x: a.phi(x) ** 2, var, mean, a.kink)


def first_moment(act: str, var: float, mean: float = 0.0) -> float:
    """E[φ(h)], h ~ N(mean, var)."""
    a = ACTIVATIONS[act]
    return gauss_expect(a.phi, var, mean, a.kink)


def deriv_moment(act: str, var: float, mean: float = 0.0) -> float:
    """E[φ'(h)²], h ~ N(mean, var)."""
    a = ACTIVATIONS[act]
    return gauss_expect(lambda x: a.dphi(x) ** 2, var, mean, a.kink)


# ---------------------------------------------------------------------------------------------
# Plain-MLP mean-field quantities


def length_map(act: str, sw2: float, sb2: float, q: float) -> float:
    """q^{l+1} = σ_w²·E[φ(√q z)²] + σ_b² (pre-activation variance of the next layer)."""
    return sw2 * second_moment(act, q) + sb2


def chi(act: str, sw2: float, q: float) -> float:
    """χ(q) = σ_w²·E[φ'(√q z)²]: the factor ‖δ‖² is multiplied by per layer going back."""
    return sw2 * deriv_moment(act, q)


Q_INFINITE = 1e12  # above this the length map is taken to diverge (no finite fixed point)


def fixed_point(act: str, sw2: float, sb2: float, q0: float = 1.0, tol: float = 1e-13, max_iter: int = 20_000) -> float:
    """q* by iterating the length map from q0; math.inf when q grows without bound."""
    if act == "tanh" and sb2 == 0.0 and sw2 <= 1.0:
        return 0.0  # tanh² < x²: q shrinks to 0 (like 1/l at σ_w² = 1: too slow to iterate)
    q = q0
    for _ in range(max_iter):
        nxt = length_map(act, sw2, sb2, q)
        if not math.isfinite(nxt) or nxt > Q_INFINITE:
            return math.inf
        if abs(nxt - q) <= tol * max(1.0, q):
            return 0.0 if nxt < 1e-10 else nxt  # the fixed point q* = 0, approached slowly
        q = nxt
    return q


def chi1(act: str, sw2: float, sb2: float, q_star: Optional[float] = None) -> float:
    """χ₁ = χ(q*); for a diverging q (ReLU-like, σ_w² large) the limit of χ(q) at large q."""
    q_star = fixed_point(act, sw2, sb2) if q_star is None else q_star
    return chi(act, sw2, q_star if math.isfinite(q_star) else Q_INFINITE)


def depth_scale(c1: float) -> float:
    """ξ = −1/ln χ₁: the depth over which ‖δ‖² changes by a factor e (< 0: it grows; inf: critical)."""
    if c1 <= 0:
        return 0.0
    if c1 == 1.0:
        return math.inf
    return -1.0 / math.log(c1)


CRITICAL_TOL = 1e-3  # |χ₁ − 1| below this is called critical


def phase(c1: float) -> str:
    if abs(c1 - 1.0) < CRITICAL_TOL:
        return "critical"
    return "ordered" if c1 < 1.0 else "chaotic"


@functools.lru_cache(maxsize=64)
def critical_sigma_w2(act: str, sb2: float) -> Optional[float]:
    """The σ_w² with χ₁ = 1 at this σ_b² (the edge of chaos), for tanh and relu; None otherwise.
    Memoised (a pure function of its two arguments): a bisection of ~80 fixed-point solves, the
    same for every point of a sweep over depth or init scale (half a sweep worker's time before)."""
    if act == "relu":
        return 2.0  # χ = σ_w²/2 for every q
    if act != "tanh":
        return None
    if sb2 == 0.0:
        return 1.0  # q* = 0 and χ₁ = σ_w²·tanh'(0)² = σ_w²
    lo, hi = 1e-6, 1.0
    while chi1(act, hi, sb2) < 1.0:
        hi *= 2.0
        if hi > 1e6:
            return None
    for _ in range(80):  # χ₁ rises with σ_w² for tanh
        mid = 0.5 * (lo + hi)
        if chi1(act, mid, sb2) < 1.0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


# ---------------------------------------------------------------------------------------------
# From a config to σ_w², σ_b² and the input's per-unit distribution


def weight_variance(init) -> Optional[float]:
    """σ_w² (weight variance × fan_in) of a square layer under `init`; None if not Gaussian-like."""
    s2 = init.scale**2
    return {
        "normal": s2,  # N(0, scale²/fan_in)
        "xavier": s2,  # N(0, 2/(fan_in+fan_out)) × scale, fan_in = fan_out
        "kaiming": 2.0 * s2,  # N(0, 2/fan_in) × scale
        "default": s2 / 3.0,  # U(±1/√fan_in) × scale: variance 1/(3·fan_in)
        "orthogonal": s2,  # ‖W u‖ = scale·‖u‖ exactly; same mean-field maps (Pennington et al. 2017)
    }.get(init.scheme)


SCHEME_VARIANCE = {"normal": 1.0, "xavier": 1.0, "kaiming": 2.0, "default": 1.0 / 3.0, "orthogonal": 1.0}  # σ_w²/scale²


def critical_scale(model) -> tuple[Optional[float], str]:
    """(`model.init.scale` at the edge of chaos for this config's scheme, activation and biases, or None;
    the sentence that says so or why not). σ_w² = SCHEME_VARIANCE[scheme]·scale², so the critical scale
    is √(critical σ_w² / that factor); σ_b² does not depend on the scale."""
    if not model.mean_field:
        return None, f"no edge of chaos computed for {model.plural}"
    factor = SCHEME_VARIANCE.get(model.init.scheme)
    if factor is None:
        return None, f"init {model.init.scheme!r} has no Gaussian-like σ_w² to scale"
    sb2 = bias_variance(model)
    sw2 = critical_sigma_w2(model.activation, sb2)
    if sw2 is None:
        return None, f"no edge of chaos computed for activation {model.activation!r} (tanh and relu only)"
    scale = math.sqrt(sw2 / factor)
    plain = " (of the plain stack x → φ(W x + b); a residual stack has none)" if model.residual else ""
    return scale, (
        f"model.init.scale = {scale:.6g} is critical for init {model.init.scheme} (σ_w² = {factor:.4g}·scale²), "
        f"{model.activation}, σ_b² = {sb2:.6g}: σ_w² = {sw2:.6g}, χ₁ = 1{plain}"
    )


def bias_variance(model) -> float:
    """σ_b²: bias_std², PyTorch's U(±1/√fan_in) for `default` (1/(3·fan_in)), else 0."""
    if not model.bias:
        return 0.0
    if model.init.bias_std is not None:
        return model.init.bias_std**2
    return 1.0 / (3.0 * model.width) if model.init.scheme == "default" else 0.0


def input_moments(data) -> tuple[float, float]:
    """(mean, variance) of one input unit: N(0, s²) for `normal`, the constant s for `ones`."""
    s = data.input_scale
    return (s, 0.0) if data.input == "ones" else (0.0, s * s)


# ---------------------------------------------------------------------------------------------
# Predictions


@dataclass(frozen=True)
class NoPrediction:
    reason: str

    def __bool__(self) -> bool:
        return False


@dataclass(frozen=True)
class Prediction:
    """Predicted ‖δ_l‖/‖δ_last‖ per site, and the mean-field summary numbers where they apply."""

    kind: str  # "exact" or "mean-field"
    model: str  # what was recognised, in words
    factors: tuple[float, ...]  # f_l with ‖δ_l‖² = f_l·‖δ_{l+1}‖², l = 0 … depth−2
    q: tuple[float, ...] = ()  # per block: the variance the recursion tracks at its input (or pre-activation)
    sigma_w2: Optional[float] = None
    sigma_b2: Optional[float] = None
    q_star: Optional[float] = None
    chi1: Optional[float] = None  # per-layer factor of ‖δ‖² at the fixed point (plain MLPs)
    critical_sigma_w2: Optional[float] = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def __bool__(self) -> bool:
        return True

    @property
    def ratios(self) -> np.ndarray:
        """‖δ_l‖/‖δ_{depth−1}‖ for every site l = 0 … depth−1 (the last is 1)."""
        return np.exp(self.log_ratios)

    @property
    def log_ratios(self) -> np.ndarray:
        """ln of `ratios`, summed in log space so that deep stacks do not underflow to log(0)."""
        with np.errstate(divide="ignore"):  # a factor of exactly 0 is a ratio of 0: ln = −inf
            logs = 0.5 * np.log(np.asarray(self.factors, dtype=float))
        return np.concatenate([np.cumsum(logs[::-1])[::-1], [0.0]])

    @property
    def grad_ratio(self) -> float:
        """Predicted first/last: ‖δ_0‖/‖δ_{depth−1}‖."""
        return float(self.ratios[0])

    @property
    def gain_per_layer(self) -> float:
        """exp(−slope) of ln(ratio) against layer: the same fit as the measured gain_per_layer."""
        logs = self.log_ratios
        if len(logs) < 2 or not np.isfinite(logs).all():
            return math.nan
        return float(np.exp(-np.polyfit(np.arange(len(logs)), logs, 1)[0]))

    @property
    def depth_scale(self) -> Optional[float]:
        return None if self.chi1 is None else depth_scale(self.chi1)

    @property
    def phase(self) -> Optional[str]:
        return None if self.chi1 is None else phase(self.chi1)


Result = "Prediction | NoPrediction"

FINITE_WIDTH = 256  # below this width the infinite-width recursions are rough: say so
SUPPORTED_LOSSES = ("sum", "mean", "random")


def predict(cfg) -> Prediction | NoPrediction:
    """The prediction for a validated `resflow.config.schema.Config`, or why there is none."""
    m = cfg.model
    if getattr(m, "factory", None) is not None:
        return NoPrediction(f"no theory here for a model built by {m.factory}")
    if not m.mean_field:  # (the block family says whether the recursions cover it)
        return NoPrediction(
            f"resflow has no prediction for {m.plural}: its mean-field theory "
            "covers MLP stacks only (`resflow run` measures this config)"
        )
    if cfg.data.dataset is not None:
        return NoPrediction(f"data.dataset {cfg.data.dataset!r}: real inputs, not the Gaussian ones the recursions assume")
    if m.norm != "none" and m.norm_type in ("batchnorm", "groupnorm"):
        return NoPrediction(f"no theory here for {m.norm_type}")
    exact = _exact(cfg)
    if exact is not None:
        return exact
    if m.share_weights:
        return NoPrediction("shared weights: one matrix reused at every depth breaks the independence the recursions need")
    if m.depth < 2:
        return NoPrediction("depth 1: a single site, nothing to predict")
    sw2 = weight_variance(m.init)
    if sw2 is None:
        return NoPrediction(f"init {m.init.scheme!r} is not Gaussian-like; only exact closed forms apply to it (none here)")
    if cfg.loss not in SUPPORTED_LOSSES:
        return NoPrediction(f"loss {cfg.loss!r}: the output gradient depends on the output, which the recursions do not track")
    sb2 = bias_variance(m)
    mean0, var0 = input_moments(cfg.data)
    if m.norm == "post":
        return NoPrediction("post-norm: no recursion implemented for a norm after the skip connection")
    if m.residual and not m.preactivation:
        return NoPrediction(
            "post-activation residual x + α·φ(W x + b): φ' is correlated with W, the mean-field recursion "
            "does not hold (set model.preactivation: true for x + α·(W φ(x) + b))"
        )
    if m.norm == "pre" and m.norm_type == "layernorm" and var0 == 0.0:
        return NoPrediction("pre-LayerNorm of a constant input (data.input: ones) is degenerate")
    if m.activation in UNVERIFIED:
        return NoPrediction(f"activation {m.activation!r}: the recursion disagrees with a wide simulation (not trusted)")
    if not m.residual and not m.preactivation and cfg.loss != "random" and m.activation not in EVEN_DERIVATIVE:
        return NoPrediction(
            f"loss {cfg.loss!r} with x → {m.activation}(W x + b): the {cfg.loss} of the outputs is not a random direction; "
            "E[φ''] ≠ 0 couples that all-ones output gradient to W and biases the measured ratio (a wide simulation "
            "disagrees with the recursion); use loss: random (the default), which the theory assumes"
        )
    notes = []
    if m.width < FINITE_WIDTH:
        notes.append(f"width {m.width} < {FINITE_WIDTH}: the infinite-width recursion is only rough here")
    pred = _mean_field(m, sw2, sb2, mean0, var0)
    if isinstance(pred, NoPrediction):
        return pred
    return Prediction(**{**pred, "notes": tuple(notes + list(pred.get("notes", ())))})


# φ' even: E[φ''(h)] = 0 for symmetric h, so a constant output gradient (sum/mean loss) stays uncorrelated with W
EVEN_DERIVATIVE = ("identity", "tanh", "sigmoid")
UNVERIFIED = ("softplus",)  # a width-512 simulation disagrees by 17% in the log ratio: no prediction

LN_EPS = 1e-5  # nn.LayerNorm's and resflow's RMSNorm's eps


def _mean_field(m, sw2: float, sb2: float, mean: float, var: float):
    """Walk the blocks forward, tracking one unit's distribution N(mean, var) of the residual stream."""
    act, alpha, depth = m.activation, m.residual_scale, m.depth
    factors, qs = [], []
    if not m.residual and m.norm == "none" and not m.preactivation:
        # x' = φ(W x + b): pre-activation variance q = σ_w²·mean(x²) + σ_b²
        q = sw2 * (mean * mean + var) + sb2
        for _ in range(depth - 1):
            qs.append(q)
            factors.append(chi(act, sw2, q))
            q = length_map(act, sw2, sb2, q)
        return _plain(f"plain {act} MLP x → φ(W x + b)", act, sw2, sb2, factors, qs, q0=qs[0] if qs else 1.0)
    if not m.residual and m.norm == "none" and m.preactivation:
        # x' = W φ(x) + b: x is the pre-activation itself; after layer 0 it is N(0, q)
        for _ in range(depth - 1):
            qs.append(mean * mean + var)
            factors.append(sw2 * deriv_moment(act, var, mean))
            mean, var = 0.0, sw2 * second_moment(act, var, mean) + sb2
        return _plain(f"plain {act} MLP x → W φ(x) + b", act, sw2, sb2, factors, qs, q0=max(qs[-1], 1e-12) if qs else 1.0)
    if m.residual and m.preactivation:
        # x' = x + α·(W φ(u) + b), u = x (no norm) or norm(x) (pre-norm)
        a2 = alpha * alpha
        for _ in range(depth - 1):
            qs.append(mean * mean + var)
            if m.norm == "pre":
                s2 = var if m.norm_type == "layernorm" else mean * mean + var  # what the norm divides by
                u_mean = 0.0 if m.norm_type == "layernorm" else mean / math.sqrt(s2 + LN_EPS)
                u_var = var / (s2 + LN_EPS)
                branch = sw2 * deriv_moment(act, u_var, u_mean) / (s2 + LN_EPS)
            else:
                u_mean, u_var, branch = mean, var, sw2 * deriv_moment(act, var, mean)
            factors.append(1.0 + a2 * branch)
            var = var + a2 * (sw2 * second_moment(act, u_var, u_mean) + sb2)
        form = "x + α·(W φ(norm(x)) + b)" if m.norm == "pre" else "x + α·(W φ(x) + b)"
        return dict(
            kind="mean-field",
            model=f"residual {act} MLP {form}, α={alpha:g}",
            factors=tuple(factors),
            q=tuple(qs),
            sigma_w2=sw2,
            sigma_b2=sb2,
        )
    return NoPrediction("no recursion implemented for this combination (plain MLP with a norm)")


def _plain(model: str, act: str, sw2: float, sb2: float, factors: list, qs: list, q0: float) -> dict:
    """A plain (no residual, no norm) stack's mean-field prediction: its per-layer factors and
    variances, the fixed point q* reached from `q0`, χ1 there and the critical σ_w²."""
    qstar = fixed_point(act, sw2, sb2, q0=q0)
    return dict(
        kind="mean-field",
        model=model,
        factors=tuple(factors),
        q=tuple(qs),
        sigma_w2=sw2,
        sigma_b2=sb2,
        q_star=qstar,
        chi1=chi1(act, sw2, sb2, qstar),
        critical_sigma_w2=critical_sigma_w2(act, sb2),
    )


def _exact(cfg) -> Optional[Prediction | NoPrediction]:
    """Closed forms that hold at any width: identity residual stacks and constant linear chains."""
    m = cfg.model
    L = m.depth
    zero_branch = m.residual and (m.residual_scale == 0.0 or m.init.scale == 0.0)
    if zero_branch and m.norm != "post":
        why = "α = 0" if m.residual_scale == 0.0 else "zero weights"
        return Prediction(
            kind="exact",
            model=f"residual stack with {why}: every block is the identity for the gradient",
            factors=(1.0,) * (L - 1),
        )
    if not m.residual and m.norm == "none" and m.init.scale == 0.0:
        return NoPrediction("zero weights without a residual: no gradient passes below the last block (0/0)")
    if m.init.scheme == "constant" and m.activation == "identity" and not m.residual and m.norm == "none":
        c, n = m.init.scale, m.width
        # W = c·11ᵀ: after one block δ ∝ 1, and Wᵀ(a·1) = c·n·a·1, so each block multiplies ‖δ‖ by c·n
        return Prediction(
            kind="exact",
            model=f"linear chain, every weight {c:g}, width {n}: ‖δ_l‖ = (c·n)^(depth−1−l)·‖δ_last‖",
            factors=((c * n) ** 2,) * (L - 1),
        )
    return None
