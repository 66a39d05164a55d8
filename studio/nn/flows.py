"""Normalizing flows on 3-D colours: the invertible networks behind the Grade tool.

A `ColourFlow` is a stack of exactly invertible layers, each with an exact log-determinant:

    fixed affine (pre)  ->  [curves, channel mix]  ->  spline couplings ...  ->  fixed affine (post)

Each coupling layer (RealNVP/Glow style) transforms one colour axis by a monotone rational-quadratic
spline (Durkan et al., "Neural Spline Flows", 2019) whose knots a small MLP predicts from other
axes; the layers cycle through the axes. Outside the spline's interval [-tail_bound, tail_bound]
the transform is the identity, so every colour has an inverse. A spline makes one layer as
expressive as a tone curve, which is what lets a flow fit a photo's colours in a few hundred steps.
The layout (see `ColourFlow`) decides which axes each coupling reads.

A flow holds a *bank* of `members` independent flows with stacked weights, evaluated in one pass:
inputs are shaped (members, batch, 3). Fitting a source and a reference flow together costs about
what fitting one does, because on a CPU the time goes to per-operation overhead, not arithmetic.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

DIMS = 3
MIN_BIN_SIZE = 1e-2  # of the interval, for both widths and heights
MIN_DERIVATIVE = 1e-2
_PARAM_LIMIT = 12.0  # spline parameters are log-sizes and log-derivatives; exp(12) is plenty
_LOG_2PI = math.log(2.0 * math.pi)


class Affine(nn.Module):
    """y = x * exp(log_scale) + shift, per member and axis; fixed (buffers), set from data."""

    def __init__(self, members: int) -> None:
        super().__init__()
        self.register_buffer("shift", torch.zeros(members, 1, DIMS))
        self.register_buffer("log_scale", torch.zeros(members, 1, DIMS))

    def set_standardise(self, mean: Tensor, std: Tensor) -> None:
        """Map data with per-axis `mean` and `std` (members, 3) to zero mean, unit variance."""
        log_std = std.clamp_min(1e-6).log()
        self.log_scale.copy_(-log_std.unsqueeze(1))
        self.shift.copy_((-mean / std.clamp_min(1e-6)).unsqueeze(1))

    def set_destandardise(self, mean: Tensor, std: Tensor) -> None:
        """The inverse of `set_standardise`: unit-variance values back to `mean`, `std`."""
        self.log_scale.copy_(std.clamp_min(1e-6).log().unsqueeze(1))
        self.shift.copy_(mean.unsqueeze(1))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        logdet = self.log_scale.sum(-1).expand(x.shape[0], x.shape[1])
        return x * self.log_scale.exp() + self.shift, logdet

    def inverse(self, y: Tensor) -> Tensor:
        return (y - self.shift) * (-self.log_scale).exp()


class MemberLinear(nn.Module):
    """A linear layer per member: (members, batch, n_in) -> (members, batch, n_out)."""

    def __init__(self, members: int, n_in: int, n_out: int, *, zero: bool = False) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(n_in)
        weight = torch.empty(members, n_in, n_out).uniform_(-bound, bound)
        self.weight = nn.Parameter(torch.zeros_like(weight) if zero else weight)
        self.bias = nn.Parameter(torch.zeros(members, 1, n_out))

    def forward(self, x: Tensor) -> Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class SplineCoupling(nn.Module):
    """Transforms colour axis `axis` by a monotone spline whose knots depend on `conditions`.

    `conditions` are other axes, read through a small MLP; with none, the knots are parameters of
    their own (a plain curve on that axis). New couplings start as the identity: the MLP's last
    layer, or the parameters, are zero.
    """

    def __init__(
        self,
        members: int,
        axis: int,
        conditions: tuple[int, ...],
        hidden: int,
        bins: int,
        tail_bound: float,
    ) -> None:
        super().__init__()
        if axis in conditions:
            raise ValueError("a coupling cannot condition an axis on itself")
        self.axis = axis
        self.tail_bound = tail_bound
        self.register_buffer(
            "conditions", torch.tensor(conditions, dtype=torch.long), persistent=False
        )
        self.net: nn.Module | None = None
        self.knots: nn.Parameter | None = None
        if conditions:
            self.net = nn.Sequential(
                MemberLinear(members, len(conditions), hidden),
                nn.SiLU(),
                MemberLinear(members, hidden, hidden),
                nn.SiLU(),
                MemberLinear(members, hidden, 3 * bins - 1, zero=True),
            )
        else:
            self.knots = nn.Parameter(torch.zeros(members, 1, 3 * bins - 1))

    def _spline(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.net is not None:
            params = self.net(x.index_select(-1, self.conditions))
        else:
            assert self.knots is not None
            params = self.knots  # (members, 1, 3K-1): one curve for the whole batch
        return params, x[..., self.axis]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        params, value = self._spline(x)
        out, logdet = rational_quadratic_spline(value, params, self.tail_bound, inverse=False)
        return _replace_axis(x, self.axis, out), logdet

    def inverse(self, y: Tensor) -> Tensor:
        params, value = self._spline(y)
        out, _ = rational_quadratic_spline(value, params, self.tail_bound, inverse=True)
        return _replace_axis(y, self.axis, out)


class ChannelCurves(nn.Module):
    """A monotone curve on each axis (a tone curve per channel), all three in one spline call."""

    def __init__(self, members: int, bins: int, tail_bound: float) -> None:
        super().__init__()
        self.tail_bound = tail_bound
        self.knots = nn.Parameter(torch.zeros(members, 1, DIMS, 3 * bins - 1))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y, logdet = rational_quadratic_spline(x, self.knots, self.tail_bound, inverse=False)
        return y, logdet.sum(-1)

    def inverse(self, y: Tensor) -> Tensor:
        return rational_quadratic_spline(y, self.knots, self.tail_bound, inverse=True)[0]


def _replace_axis(x: Tensor, axis: int, value: Tensor) -> Tensor:
    parts = list(x.unbind(-1))
    parts[axis] = value
    return torch.stack(parts, dim=-1)


class InvertibleLinear(nn.Module):
    """y = x W^T + c with W = L U (unit lower times upper triangular, positive diagonal).

    Glow's invertible 1x1 convolution, for colours: a channel mix. Starts as the identity.
    """

    def __init__(self, members: int) -> None:
        super().__init__()
        self.lower = nn.Parameter(torch.zeros(members, DIMS, DIMS))
        self.upper = nn.Parameter(torch.zeros(members, DIMS, DIMS))
        self.log_diagonal = nn.Parameter(torch.zeros(members, DIMS))
        self.bias = nn.Parameter(torch.zeros(members, 1, DIMS))
        self.register_buffer("eye", torch.eye(DIMS), persistent=False)

    def weight(self) -> Tensor:
        lower = self.lower.tril(-1) + self.eye
        upper = self.upper.triu(1) + torch.diag_embed(self.log_diagonal.exp())
        return lower @ upper

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y = torch.baddbmm(self.bias, x, self.weight().transpose(1, 2))
        return y, self.log_diagonal.sum(-1, keepdim=True).expand(x.shape[0], x.shape[1])

    def inverse(self, y: Tensor) -> Tensor:
        return (y - self.bias) @ torch.linalg.inv(self.weight()).transpose(1, 2)


LAYOUTS = ("coupling", "triangular", "edit")


class ColourFlow(nn.Module):
    """A bank of `members` invertible maps R^3 -> R^3 with exact log-determinants.

    As a density model (`log_prob`), `forward` maps colours to a standard-normal latent space. As a
    colour-to-colour map (a learnt edit), `post` maps into the target's colours.

    `coupling_layers` spline couplings; coupling i transforms axis i mod 3. The layout decides
    what each reads and what comes first:
    - "coupling": the two other axes (RealNVP/Glow style; approaches any smooth bijection).
    - "triangular": only the axes before its own (axis 0 none, axis 1 axis 0, axis 2 axes 0 and
      1). The flow is then a triangular (Knothe-Rosenblatt) map: output axis 0 depends on input
      axis 0 alone, through a monotone curve.
    - "edit": as "coupling", after a curve on each axis and a channel mix (`InvertibleLinear`),
      the way colour edits are built (tone curves, channel mixer, saturation, then selective
      changes). Curves and mixes fitted on one photo carry over to colours it does not contain.
    """

    def __init__(
        self,
        members: int = 1,
        coupling_layers: int = 6,
        hidden: int = 32,
        bins: int = 8,
        tail_bound: float = 4.0,
        layout: str = "coupling",
    ) -> None:
        super().__init__()
        if members < 1 or coupling_layers < 1 or hidden < 1 or bins < 2:
            raise ValueError("a colour flow needs members, coupling layers, hidden >= 1, bins >= 2")
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, not {layout!r}")
        self.members = members
        self.config = {
            "coupling_layers": coupling_layers,
            "hidden": hidden,
            "bins": bins,
            "tail_bound": tail_bound,
            "layout": layout,
        }
        self.pre = Affine(members)
        layers: list[nn.Module] = []
        if layout == "edit":
            layers += [ChannelCurves(members, bins, tail_bound), InvertibleLinear(members)]
        for layer in range(coupling_layers):
            axis = layer % DIMS
            reads = tuple(range(axis)) if layout == "triangular" else _others(axis)
            layers.append(SplineCoupling(members, axis, reads, hidden, bins, tail_bound))
        self.layers = nn.ModuleList(layers)
        self.post = Affine(members)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (members, batch, 3) -> (y, log|det dy/dx| (members, batch))."""
        y, logdet = self.pre(x)
        for layer in self.layers:
            y, layer_logdet = layer(y)
            logdet = logdet + layer_logdet
        y, post_logdet = self.post(y)
        return y, logdet + post_logdet

    def inverse(self, y: Tensor) -> Tensor:
        x = self.post.inverse(y)
        for layer in reversed(self.layers):
            x = layer.inverse(x)
        return self.pre.inverse(x)

    def member(self, index: int) -> ColourFlow:
        """A one-member flow with a copy of member `index`'s weights (to evaluate it alone)."""
        single = ColourFlow(1, **self.config)
        weights = {name: value[index : index + 1] for name, value in self.state_dict().items()}
        single.load_state_dict(weights)
        first = next(self.parameters())
        return single.to(device=first.device, dtype=first.dtype).eval()

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log-density of colours x (members, batch, 3) under each member, in nats."""
        z, logdet = self(x)
        return -0.5 * (z.square().sum(-1) + DIMS * _LOG_2PI) + logdet


def _others(axis: int) -> tuple[int, ...]:
    return tuple(a for a in range(DIMS) if a != axis)


def rational_quadratic_spline(
    x: Tensor, params: Tensor, tail_bound: float, *, inverse: bool
) -> tuple[Tensor, Tensor]:
    """A monotone rational-quadratic spline on [-B, B], identity outside; (y, log|dy/dx|).

    `params` (..., 3K-1) holds the logs of K bin widths and K bin heights (normalised to the
    interval) and of K-1 interior knot derivatives; the derivative at both ends is 1, matching the
    identity tails. Its leading dimensions broadcast against x's (a curve shared by a batch has
    size 1 there). With `inverse`, x is an output and the result is the input that produced it;
    the log-determinant is then the forward one at that input.

    Written for few operations: on a CPU a flow's time goes to per-operation overhead.
    """
    bins = (params.shape[-1] + 1) // 3
    # exp of clamped values rather than softmax/softplus: the same maps, several times faster on
    # small rows, and zero parameters still give uniform bins with unit derivatives (the identity)
    positive = params.clamp(-_PARAM_LIMIT, _PARAM_LIMIT).exp()
    sizes = positive[..., : 2 * bins].unflatten(-1, (2, bins))
    span = 2 * tail_bound
    sizes = sizes * ((1 - MIN_BIN_SIZE * bins) * span / sizes.sum(-1, keepdim=True)) + (
        MIN_BIN_SIZE * span
    )
    upper = torch.cumsum(sizes, dim=-1) - tail_bound  # (..., 2, K): right edges of x and y bins
    interior = MIN_DERIVATIVE + (1 - MIN_DERIVATIVE) * positive[..., 2 * bins :]
    derivatives = F.pad(interior, (1, 1), value=1.0)  # (..., K+1), 1 at both ends

    # Outside [-B, B] the spline continues as the identity: evaluate at the clamped value and add
    # back what was clamped off (the end knots sit at -B and B with slope 1, so this is exact).
    clamped = x.clamp(-tail_bound, tail_bound)
    edges = upper[..., 1 if inverse else 0, :].expand(*x.shape, bins).contiguous()
    index = torch.searchsorted(edges, clamped.unsqueeze(-1), right=True).clamp_(max=bins - 1)
    in_bin = index.unsqueeze(-2).expand(*x.shape, 2, 1)
    bin_upper = upper.expand(*x.shape, 2, bins).gather(-1, in_bin).squeeze(-1)
    bin_size = sizes.expand(*x.shape, 2, bins).gather(-1, in_bin).squeeze(-1)
    ends = torch.cat([index, index + 1], dim=-1)
    d_lo, d_hi = derivatives.expand(*x.shape, bins + 1).gather(-1, ends).unbind(-1)
    width, height = bin_size.unbind(-1)
    x_lo, y_lo = (bin_upper - bin_size).unbind(-1)
    slope = height / width
    curvature = d_lo + d_hi - 2 * slope

    if inverse:
        dy = clamped - y_lo
        a = height * (slope - d_lo) + dy * curvature
        b = height * d_lo - dy * curvature
        c = -slope * dy
        root = (b.square() - 4 * a * c).clamp_min(0).sqrt()
        theta = ((2 * c) / (-b - root)).clamp(0, 1)
        out = theta * width + x_lo
    else:
        theta = (clamped - x_lo) / width
    one_minus = 1 - theta
    mix = theta * one_minus
    theta_squared = theta.square()
    denominator = slope + curvature * mix
    if not inverse:
        out = y_lo + height * (slope * theta_squared + d_lo * mix) / denominator
    numerator = slope.square() * (
        d_hi * theta_squared + 2 * slope * mix + d_lo * one_minus.square()
    )
    logdet = (numerator / denominator.square()).log()
    return out + (x - clamped), logdet
