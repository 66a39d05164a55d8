"""3D LUTs: applied exactly, and `.cube` files that other tools read and write."""

import warnings

import numpy as np
import pytest

from studio.engines.base import EngineError
from studio.engines.lut import (
    INTERPOLATIONS,
    CubeError,
    CubeLUT,
    apply_lut,
    identity_lut,
    read_cube,
    write_cube,
)

with warnings.catch_warnings():  # colour-science warns that optional packages are missing
    warnings.simplefilter("ignore")
    import colour


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def warm_look(rgb: np.ndarray) -> np.ndarray:
    """A smooth, non-linear grade: a curve per channel plus some cross-talk."""
    bend = np.array([0.4, 0.0, -0.3], dtype=np.float32)
    return (0.9 * (rgb + bend * rgb * (1 - rgb)) + 0.05 * rgb[..., ::-1]).astype(np.float32)


@pytest.fixture
def pixels() -> np.ndarray:
    return np.random.default_rng(0).random((64, 80, 3), dtype=np.float32)


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
@pytest.mark.parametrize("size", [2, 17, 33])
def test_identity_lut_changes_nothing(pixels, size, interpolation):
    out = apply_lut(pixels, identity_lut(size), interpolation=interpolation)
    assert out.shape == pixels.shape and out.dtype == np.float32
    assert np.abs(out - pixels).max() < 1e-6


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_a_33_point_lut_reproduces_a_smooth_grade_within_a_tenth_of_an_8_bit_step(
    pixels, interpolation
):
    table = warm_look(identity_lut(33))
    out = apply_lut(pixels, table, interpolation=interpolation)
    assert np.abs(out - warm_look(pixels)).max() < 0.1 / 255


def test_table_is_indexed_red_green_blue():
    table = identity_lut(5)
    assert table[4, 0, 0].tolist() == [1.0, 0.0, 0.0]
    assert table[0, 4, 0].tolist() == [0.0, 1.0, 0.0]
    assert table[0, 0, 4].tolist() == [0.0, 0.0, 1.0]


def test_domain_maps_inputs_onto_the_table():
    table = identity_lut(9)  # over a domain of [0, 2]: the output is half the input
    rgb = np.array([[0.0, 1.0, 2.0], [0.5, 1.5, 3.0]], dtype=np.float32)
    out = apply_lut(rgb, table, domain_min=(0, 0, 0), domain_max=(2, 2, 2))
    assert np.allclose(out, np.minimum(rgb, 2) / 2, atol=1e-6)


def test_cube_round_trip_through_colour_science(tmp_path):
    table = warm_look(identity_lut(17))
    path = write_cube(tmp_path / "warm.cube", CubeLUT(table, title="Warm look"))
    theirs = colour.read_LUT(str(path))
    assert isinstance(theirs, colour.LUT3D)
    assert theirs.size == 17 and theirs.name == "Warm look"
    assert np.abs(theirs.table - table).max() < 1e-6
    ours = read_cube(path)
    assert np.abs(ours.table - table).max() < 1e-6 and ours.title == "Warm look"


def test_cube_lines_run_red_fastest(tmp_path):
    path = write_cube(tmp_path / "id.cube", CubeLUT(identity_lut(2)))
    rows = [line for line in path.read_text().splitlines() if line[:1].isdigit()]
    assert rows[:3] == [
        "0.000000 0.000000 0.000000",
        "1.000000 0.000000 0.000000",
        "0.000000 1.000000 0.000000",
    ]


def test_reads_cubes_written_by_colour_science(tmp_path):
    domain = np.array([[-0.1, 0.0, 0.0], [1.5, 1.0, 2.0]])
    table = warm_look(colour.LUT3D.linear_table(9, domain)).astype(np.float64)
    colour.write_LUT(colour.LUT3D(table, "From colour", domain), str(tmp_path / "c.cube"))
    ours = read_cube(tmp_path / "c.cube")
    assert np.abs(ours.table - table).max() < 1e-6
    assert ours.domain_min == pytest.approx((-0.1, 0.0, 0.0))
    assert ours.domain_max == pytest.approx((1.5, 1.0, 2.0))
    rgb = np.random.default_rng(1).random((200, 3)) * [1.6, 1.0, 2.0] - [0.1, 0, 0]
    expected = colour.LUT3D(table, domain=domain).apply(rgb)
    out = apply_lut(
        rgb.astype(np.float32), ours.table, domain_min=ours.domain_min, domain_max=ours.domain_max
    )
    assert np.abs(out - expected).max() < 1e-5


def test_reads_resolve_input_range_comments_and_blank_lines(tmp_path):
    lines = ["# Resolve", "", 'TITLE "R"', "LUT_3D_SIZE 2", "LUT_3D_INPUT_RANGE 0.0 2.0"]
    lines += [" ".join(str(float(v) * 2) for v in row) for row in _rows(identity_lut(2))]
    path = tmp_path / "r.cube"
    path.write_text("\n".join(lines) + "\n")
    lut = read_cube(path)
    assert lut.domain_min == (0.0,) * 3 and lut.domain_max == (2.0,) * 3
    assert lut.table[1, 0, 1].tolist() == [2.0, 0.0, 2.0]


def _rows(table: np.ndarray) -> np.ndarray:
    return table.transpose(2, 1, 0, 3).reshape(-1, 3)


def _cube(*header: str, rows: list[str] | None = None) -> str:
    body = rows if rows is not None else [f"{r} {g} {b}" for r, g, b in _rows(identity_lut(2))]
    return "\n".join([*header, *body]) + "\n"


MALFORMED = {
    "missing size": (_cube('TITLE "x"'), "LUT_3D_SIZE is missing"),
    "too few lines": (_cube("LUT_3D_SIZE 3"), "needs 27 table lines, found 8"),
    "bad number": (_cube("LUT_3D_SIZE 2", rows=["0 0 0", "1 0 zero"] + ["0 0 0"] * 6), "line 3"),
    "two numbers": (_cube("LUT_3D_SIZE 2", rows=["0 0"] + ["0 0 0"] * 7), "three numbers"),
    "size too large": (_cube("LUT_3D_SIZE 300"), "out of range"),
    "size too small": (_cube("LUT_3D_SIZE 1"), "out of range"),
    "size not a number": (_cube("LUT_3D_SIZE big"), "whole number"),
    "1D LUT": (_cube("LUT_1D_SIZE 8"), "1D LUT"),
    "inverted domain": (_cube("LUT_3D_SIZE 2", "DOMAIN_MIN 1 1 1", "DOMAIN_MAX 0 0 0"), "DOMAIN"),
    "short domain": (_cube("LUT_3D_SIZE 2", "DOMAIN_MIN 0 0"), "needs 3 numbers"),
    "not finite": (_cube("LUT_3D_SIZE 2", rows=["nan 0 0"] + ["0 0 0"] * 7), "finite"),
    "text after data": (_cube("LUT_3D_SIZE 2", rows=["0 0 0", "LUT_3D_SIZE 2"]), "line 3"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_cube_files_are_refused_with_what_is_wrong(tmp_path, case):
    text, expected = MALFORMED[case]
    path = tmp_path / "bad.cube"
    path.write_text(text)
    with pytest.raises(CubeError, match=expected) as raised:
        read_cube(path)
    assert isinstance(raised.value, EngineError)  # shown to people as it is
    assert str(path) in str(raised.value)


def test_binary_and_missing_files_are_refused(tmp_path):
    binary = tmp_path / "photo.cube"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    with pytest.raises(CubeError, match=r"not a text \.cube"):
        read_cube(binary)
    with pytest.raises(CubeError, match="could not read"):
        read_cube(tmp_path / "absent.cube")


def test_written_cube_is_complete_or_absent(tmp_path):
    with pytest.raises(ValueError):
        write_cube(tmp_path / "bad.cube", CubeLUT(np.zeros((3, 3, 2, 3), np.float32)))
    assert list(tmp_path.iterdir()) == []
