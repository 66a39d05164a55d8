"""The colour flows are exact bijections with exact log-determinants, in every layout."""

import copy

import pytest
import torch

from studio.nn.flows import LAYOUTS, ColourFlow, rational_quadratic_spline

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def perturbed_flow(layout: str, *, members: int = 2, dtype=torch.float32) -> ColourFlow:
    """A flow far from the identity, as after fitting: every weight and knot randomised."""
    torch.manual_seed(7)
    flow = ColourFlow(members=members, coupling_layers=6, hidden=16, layout=layout).to(dtype)
    with torch.no_grad():
        for parameter in flow.parameters():
            parameter.normal_(0.0, 0.3)
        flow.pre.set_standardise(
            torch.tensor([[0.6, 0.02, -0.03]] * members, dtype=dtype),
            torch.tensor([[0.2, 0.05, 0.06]] * members, dtype=dtype),
        )
    return flow.eval()


def oklab_like(count: int, members: int = 2, dtype=torch.float32) -> torch.Tensor:
    """Colours spread like a photo's in OKLab, with some far outside the spline intervals."""
    torch.manual_seed(3)
    colours = torch.randn(members, count, 3, dtype=dtype) * torch.tensor(
        [0.2, 0.05, 0.06], dtype=dtype
    ) + torch.tensor([0.6, 0.02, -0.03], dtype=dtype)
    colours[:, :5] *= 4  # beyond the tails
    return colours


CENTRES = torch.tensor([[0.3, 0.05, 0.02], [0.7, -0.04, 0.08], [0.9, 0.0, -0.1]])


def clustered_colours(count: int, seed: int) -> torch.Tensor:
    """Colours of two pictures (2, count, 3): three clusters in OKLab, as photos have."""
    generator = torch.Generator().manual_seed(seed)
    choice = torch.randint(0, 3, (2, count), generator=generator)
    return CENTRES[choice] + 0.03 * torch.randn(2, count, 3, generator=generator)


@pytest.fixture(scope="module", params=LAYOUTS)
def fitted_flow(request, one_torch_thread) -> ColourFlow:
    """A bank of two flows fitted (briefly) to clustered colours, as a grade fits them."""
    torch.manual_seed(11)
    data = clustered_colours(4096, seed=1)
    flow = ColourFlow(members=2, coupling_layers=6, hidden=16, layout=request.param)
    flow.pre.set_standardise(data.mean(1), data.std(1))
    optimiser = torch.optim.Adam(flow.parameters(), lr=1e-2)
    for _ in range(150):
        loss = -flow.log_prob(data[:, torch.randint(0, 4096, (512,))]).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return flow.eval()


def test_flow_inverse_recovers_colours_within_1e_4(fitted_flow):
    colours = clustered_colours(4096, seed=2)  # new colours from the same pictures
    with torch.no_grad():
        latent, _ = fitted_flow(colours)
        recovered = fitted_flow.inverse(latent)
    assert (latent - colours).abs().max() > 1.0  # the flow really moved them
    assert (recovered - colours).abs().max() < 1e-4


def test_flow_inverse_in_float64_is_exact_to_1e_8_even_far_from_the_data(fitted_flow):
    flow = copy.deepcopy(fitted_flow).double()
    colours = oklab_like(4096, dtype=torch.float64)  # includes colours far outside the clusters
    with torch.no_grad():
        recovered = flow.inverse(flow(colours)[0])
    assert (recovered - colours).abs().max() < 1e-8


@pytest.mark.parametrize("layout", LAYOUTS)
def test_log_density_matches_numerical_jacobian(layout):
    flow = perturbed_flow(layout, members=1, dtype=torch.float64)
    colours = oklab_like(6, members=1, dtype=torch.float64)[0]
    log_density = flow.log_prob(colours[None])[0]
    for point, expected in zip(colours, log_density, strict=True):
        jacobian = torch.autograd.functional.jacobian(lambda x: flow(x[None, None])[0][0, 0], point)
        latent = flow(point[None, None])[0][0, 0]
        normal = -0.5 * (latent.square().sum() + 3 * torch.log(torch.tensor(2 * torch.pi)))
        numerical = normal + torch.linalg.slogdet(jacobian).logabsdet
        assert float(expected.detach()) == pytest.approx(float(numerical.detach()), abs=1e-6)


def test_log_density_integrates_to_one():
    """An exact density: its integral over a 3-D grid (Riemann sum) is 1."""
    flow = perturbed_flow("triangular", members=1, dtype=torch.float64)
    axes = [
        torch.linspace(-0.6, 1.8, 65),
        torch.linspace(-0.5, 0.5, 65),
        torch.linspace(-0.5, 0.5, 65),
    ]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(1, -1, 3).double()
    with torch.no_grad():
        density = flow.log_prob(grid).exp()
    cell = (2.4 / 64) * (1.0 / 64) * (1.0 / 64)
    assert float(density.sum() * cell) == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_new_flow_is_the_identity(layout):
    flow = ColourFlow(members=2, layout=layout)
    colours = oklab_like(512)
    with torch.no_grad():
        mapped, logdet = flow(colours)
    assert torch.allclose(mapped, colours, atol=1e-5)
    assert logdet.abs().max() < 1e-5


def test_triangular_flow_maps_axis_0_by_a_monotone_curve_of_axis_0_alone():
    flow = perturbed_flow("triangular", members=1)
    lightness = torch.linspace(-0.5, 1.5, 200)
    first = torch.stack([lightness, torch.zeros(200), torch.zeros(200)], -1)[None]
    other = torch.stack([lightness, torch.full((200,), 0.3), torch.full((200,), -0.2)], -1)[None]
    with torch.no_grad():
        a, b = flow(first)[0][0, :, 0], flow(other)[0][0, :, 0]
    assert torch.equal(a, b)  # the chroma of a colour does not change where its lightness goes
    assert (a.diff() > 0).all()


def test_members_of_a_bank_are_independent():
    flow = perturbed_flow("coupling")
    colours = oklab_like(256)
    with torch.no_grad():
        before = flow(colours)[0][0].clone()
        for parameter in flow.parameters():
            parameter[1].add_(1.0)
        after = flow(colours)[0][0]
    assert torch.equal(before, after)


def test_spline_is_monotone_and_the_identity_outside_its_interval():
    torch.manual_seed(0)
    params = torch.randn(23) * 2
    x = torch.linspace(-6, 6, 2001)
    y, logdet = rational_quadratic_spline(x, params.expand(2001, 23), 4.0, inverse=False)
    assert (y.diff() > 0).all()
    outside = x.abs() >= 4
    assert torch.allclose(y[outside], x[outside])
    assert logdet[outside].abs().max() < 1e-5
    x, params = x.double(), params.double()
    y, _ = rational_quadratic_spline(x, params.expand(2001, 23), 4.0, inverse=False)
    back, _ = rational_quadratic_spline(y, params.expand(2001, 23), 4.0, inverse=True)
    assert (back - x).abs().max() < 1e-9


def test_flow_rejects_an_unknown_layout():
    with pytest.raises(ValueError, match="layout"):
        ColourFlow(layout="diagonal")
