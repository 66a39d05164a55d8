"""The Grade tab: give a photo the colours of a reference, of an edit, of a LUT or of a saved grade.

Builds a GradeRequest from the widgets and hands it to the main window's queue; never fits a flow
itself. A run's history entry holds the graded image, the fitted grade (a preset: .json and
.safetensors) and its .cube LUT, so exporting the LUT, saving the preset, grading a batch and
drawing the likelihood map all start from those files and never fit again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import shiboken6
from PySide6.QtCore import Qt
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QImage
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible, QElidingLabel, QLabeledSlider
from superqt.utils import create_worker

from studio.app.history import Entry
from studio.app.jobs import Job, JobSnapshot, JobState
from studio.app.runs import SUFFIXES, describe_error
from studio.errors import UserError
from studio.files import copy_atomically
from studio.ui.colour_plots import ChromaPlot, ChromaSamples, HeatLegend, sample_chroma
from studio.ui.convert import load_qimage, qimage_from_array
from studio.ui.image_view import ImageView
from studio.ui.jobs import failure_text
from studio.ui.output_widgets import SeedRow, format_widgets
from studio.ui.tool_tab import IMAGE_FILTER, ToolTab

if TYPE_CHECKING:
    from studio.engines.grade import GradeRequest

log = logging.getLogger(__name__)

MODE_TITLES = {
    "reference": "Match a reference",
    "pair": "Learn from a before/after pair",
    "lut": "Apply a .cube LUT",
    "preset": "Apply a saved grade",
}
FLOW_MODES = ("reference", "pair")  # the modes that fit a flow (the others read a file)
MODE_ROLES = {
    "reference": ("reference",),
    "pair": ("before", "after"),
    "lut": ("lut",),
    "preset": ("preset",),
}
IMAGE_ROLES = ("reference", "before", "after")
ROLE_BUTTONS = {
    "reference": "Reference image…",
    "before": "Before…",
    "after": "After…",
    "lut": ".cube LUT…",
    "preset": "Saved grade…",
}
ROLE_MISSING = {
    "reference": "Choose a reference image first.",
    "before": "Choose the 'before' image (the original) first.",
    "after": "Choose the 'after' image (your edited version) first.",
    "lut": "Choose a .cube LUT file first.",
    "preset": "Choose a saved grade (.json or .safetensors) first.",
}
# the same values as studio.engines.grade (imported there with torch, so not at Studio's start)
LUT_SIZES = (17, 33, 65)
DEFAULT_LUT_SIZE = 33
DEFAULT_COUPLING_LAYERS = 6
DEFAULT_HIDDEN = 32
DEFAULT_ITERATIONS = 200
MAX_SEED = 2**63 - 1
RESULT_SUFFIXES = tuple(SUFFIXES.values())
SAVED_SUFFIXES = (".cube", ".json")  # what a grade entry keeps besides its image: LUT, preset

CUBE_FILTER = "3D LUTs (*.cube);;All files (*)"
PRESET_FILTER = "Saved grades (*.json *.safetensors);;All files (*)"
PRESET_SAVE_FILTER = "Saved grades (*.json)"  # written as a .json beside its .safetensors
FILE_FILTERS = {
    "reference": IMAGE_FILTER,
    "before": IMAGE_FILTER,
    "after": IMAGE_FILTER,
    "lut": CUBE_FILTER,
    "preset": PRESET_FILTER,
}
NO_LIKELIHOOD = "The likelihood map needs a grade matched to a reference image."


@dataclass(frozen=True)
class Likelihood:
    """The likelihood view of one graded source, ready to show."""

    heat: np.ndarray  # (H, W, 3) uint8: bright where the reference lacks the source's colour
    ramp: np.ndarray  # (256, 3) uint8: the heat map's colours, common to absent


class GradeTab(ToolTab):
    tool = "grade"
    title = "Grade"

    def __init__(self, window) -> None:
        super().__init__(window)
        self.input_path: Path | None = None
        self.parent_id: int | None = None
        self.files: dict[str, Path | None] = dict.fromkeys(ROLE_BUTTONS)
        self._sizes: dict[str, tuple[int, int]] = {}
        self.entry: Entry | None = None  # the finished run whose result is shown
        self.result_path: Path | None = None
        self._result_image: QImage | None = None
        self._heat_image: QImage | None = None
        self._jobs: dict[int, GradeRequest] = {}  # runs of this tab's widgets
        self._batch: dict[int, str] = {}  # job id -> image name, for "apply to a batch"
        self._batch_counts = {"done": 0, "failed": 0}
        self._chroma: dict[str, ChromaSamples] = {}  # path -> its sampled colours
        self._sampling: set[str] = set()
        self._unreadable: set[str] = set()
        self._workers: set[Any] = set()
        # dialogs, replaceable (tests answer them without a person)
        self.choose_open_path = self._ask_open_path
        self.choose_open_paths = self._ask_open_paths
        self.choose_save_path = self._ask_save_path
        self._build()
        self.set_mode("reference")

    # -- layout ---------------------------------------------------------------------------
    def _build(self) -> None:
        self.open_button = QPushButton("Open image…")
        self.open_button.clicked.connect(self._choose_image)
        self.input_label = QLabel("No image — open one or drop it here")
        self.input_label.setWordWrap(True)
        self.mode_combo = QComboBox()
        for mode, text in MODE_TITLES.items():
            self.mode_combo.addItem(text, mode)
        self.mode_combo.currentIndexChanged.connect(lambda _index: self._mode_changed())
        self.file_rows = {role: _FileRow(text) for role, text in ROLE_BUTTONS.items()}
        for role, row in self.file_rows.items():
            row.button.clicked.connect(lambda _checked=False, r=role: self._choose_file(r))
        self.file_rows["before"].setToolTip("The photo as it was before you edited it elsewhere")
        self.file_rows["after"].setToolTip("The same photo after your edit, same size, uncropped")

        self.strength = QLabeledSlider(Qt.Orientation.Horizontal)
        self.strength.setRange(0, 200)
        self.strength.setValue(100)
        self.strength.setToolTip("0 % leaves the photo as it is, 100 % is the full grade")
        self.preserve_luminance = QCheckBox("Preserve luminance")
        self.preserve_luminance.setToolTip("Keep each pixel's lightness; change only its colour")
        self.lut_size = QComboBox()
        for size in LUT_SIZES:
            self.lut_size.addItem(f"{size} points", size)
        self.lut_size.setCurrentIndex(LUT_SIZES.index(DEFAULT_LUT_SIZE))
        self.lut_size.setToolTip("Resolution of the 3D LUT the grade is baked into and exported as")
        self.seed_row = SeedRow(MAX_SEED, "The same seed and settings fit the same grade")
        self.seed_spin, self.dice_button = self.seed_row.spin, self.seed_row.dice
        self.format_combo, self.quality_spin = format_widgets(self.window_.ctx.settings)
        self.advanced = self._build_advanced()

        self.run_button = QPushButton("Grade")
        self.run_button.setToolTip("Grade the image (Ctrl+Enter)")
        self.run_button.setDefault(True)
        self.run_button.clicked.connect(self.run)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.export_lut_button = QPushButton("Export LUT (.cube)…")
        self.export_lut_button.clicked.connect(self.export_lut)
        self.save_preset_button = QPushButton("Save grade as preset…")
        self.save_preset_button.clicked.connect(self.save_preset)
        self.batch_button = QPushButton("Apply to a batch…")
        self.batch_button.setToolTip("Grade other images with this grade, without fitting again")
        self.batch_button.clicked.connect(self.apply_to_batch)

        form = QFormLayout()
        form.addRow(self.open_button)
        form.addRow(self.input_label)
        form.addRow("Mode", self.mode_combo)
        for row in self.file_rows.values():
            form.addRow(row)
        form.addRow("Strength %", self.strength)
        form.addRow(self.preserve_luminance)
        form.addRow("LUT size", self.lut_size)
        form.addRow("Seed", self.seed_row)
        form.addRow("Format", self.format_combo)
        form.addRow("Quality", self.quality_spin)
        controls = QWidget()
        column = QVBoxLayout(controls)
        column.addLayout(form)
        column.addWidget(self.advanced)
        column.addWidget(self.run_button)
        column.addWidget(self.status)
        column.addWidget(self.export_lut_button)
        column.addWidget(self.save_preset_button)
        column.addWidget(self.batch_button)
        column.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(controls)
        scroll.setMaximumWidth(360)
        scroll.setMinimumWidth(260)

        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(scroll)
        splitter.addWidget(self._build_results())
        splitter.setStretchFactor(1, 1)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(splitter)

    def _build_advanced(self) -> QCollapsible:
        self.layers_spin = QSpinBox(minimum=1, maximum=32, value=DEFAULT_COUPLING_LAYERS)
        self.layers_spin.setToolTip("Coupling layers of each flow: more can follow subtler looks")
        self.hidden_spin = QSpinBox(minimum=4, maximum=512, singleStep=8, value=DEFAULT_HIDDEN)
        self.hidden_spin.setToolTip("Width of the networks inside each layer")
        self.iterations_spin = QSpinBox(minimum=1, maximum=100_000, singleStep=50)
        self.iterations_spin.setValue(DEFAULT_ITERATIONS)
        self.iterations_spin.setToolTip("Fitting steps: more fit closer and take longer")
        content = QWidget()
        form = QFormLayout(content)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("Flow layers", self.layers_spin)
        form.addRow("Hidden width", self.hidden_spin)
        form.addRow("Iterations", self.iterations_spin)
        advanced = QCollapsible("Advanced")
        advanced.addWidget(content)
        return advanced

    def _build_results(self) -> QWidget:
        self.result_button = QPushButton("Result")
        self.likelihood_button = QPushButton("Likelihood")
        self.likelihood_button.setToolTip(NO_LIKELIHOOD)
        self.view_buttons = QButtonGroup(self)
        for button in (self.result_button, self.likelihood_button):
            button.setCheckable(True)
            self.view_buttons.addButton(button)
        self.result_button.setChecked(True)
        self.likelihood_button.setEnabled(False)
        self.view_buttons.buttonToggled.connect(lambda _button, _on: self._show_view())
        self.legend = HeatLegend()
        self.legend.hide()
        self.view = ImageView(placeholder="Drop an image here")
        self.source_plot = ChromaPlot("Source")
        self.reference_plot = ChromaPlot("Reference")
        self.result_plot = ChromaPlot("Result")

        toggles = QHBoxLayout()
        toggles.addWidget(self.result_button)
        toggles.addWidget(self.likelihood_button)
        toggles.addWidget(self.legend, 1)
        toggles.addStretch(0)
        plots = QWidget()
        plot_row = QHBoxLayout(plots)
        plot_row.setContentsMargins(0, 0, 0, 0)
        for plot in (self.source_plot, self.reference_plot, self.result_plot):
            plot_row.addWidget(plot)
        plots.setFixedHeight(220)
        panel = QWidget()
        column = QVBoxLayout(panel)
        column.setContentsMargins(0, 0, 0, 0)
        column.addLayout(toggles)
        column.addWidget(self.view, 1)
        column.addWidget(plots)
        return panel

    # -- inputs ---------------------------------------------------------------------------
    def mode(self) -> str:
        return self.mode_combo.currentData()

    def set_mode(self, mode: str) -> None:
        self.mode_combo.setCurrentIndex(self.mode_combo.findData(mode))
        self._mode_changed()

    def open_image(self, path: Path, parent_id: int | None = None) -> None:
        image = self.take_input(path, parent_id)
        if image is None:
            return
        self.result_path = None
        self._result_image = None
        self._set_heat(None)
        self.view.set_before(None)
        self.view.set_image(image)
        self.set_status("")
        self._refresh_plots()
        self._sync_enabled()

    def set_file(self, role: str, path: Path) -> None:
        """Choose the reference, before, after, .cube or saved-grade file (see MODE_ROLES)."""
        path = Path(path)
        detail = ""
        if role in IMAGE_ROLES:
            try:
                image = load_qimage(path)
            except UserError as exc:
                self.window_.notifications.error(str(exc))
                return
            self._sizes[role] = (image.width(), image.height())
            detail = f"{image.width()}×{image.height()}"
        elif not path.is_file():
            self.window_.notifications.error(f"{path} does not exist; choose another file.")
            return
        self.files[role] = path
        self.file_rows[role].set_path(path, detail)
        if role in ("before", "after"):
            problem = self._pair_problem()
            if problem:
                self.window_.notifications.error(problem)
        self._refresh_plots()
        self._sync_enabled()

    def _mode_changed(self) -> None:
        mode = self.mode()
        for role, row in self.file_rows.items():
            row.setVisible(role in MODE_ROLES[mode])
        fits = mode in FLOW_MODES
        for widget in (self.advanced, self.seed_row):
            widget.setEnabled(fits)
        self._refresh_plots()
        self._sync_enabled()

    def _pair_problem(self) -> str:
        before, after = self._sizes.get("before"), self._sizes.get("after")
        if None in (self.files["before"], self.files["after"]) or before == after:
            return ""
        return (
            f"The before ({before[0]}×{before[1]}) and after ({after[0]}×{after[1]}) images differ "
            "in size; export both at the same size, uncropped."
        )

    def _choose_image(self) -> None:
        path = self.choose_open_path("Open an image to grade", IMAGE_FILTER)
        if path is not None:
            self.open_image(path)

    def _choose_file(self, role: str) -> None:
        path = self.choose_open_path(ROLE_BUTTONS[role].rstrip("…"), FILE_FILTERS[role])
        if path is not None:
            self.set_file(role, path)

    # -- running --------------------------------------------------------------------------
    def build_request(self) -> GradeRequest:
        from studio.engines.grade import GradeRequest

        mode = self.mode()
        paths = {
            f"{role}_path": str(self.files[role])
            for role in MODE_ROLES[mode]
            if self.files[role] is not None
        }
        return GradeRequest(
            input_path=str(self.input_path),
            mode=mode,
            **paths,
            strength=self.strength.value() / 100,
            preserve_luminance=self.preserve_luminance.isChecked(),
            lut_size=self.lut_size.currentData(),
            coupling_layers=self.layers_spin.value(),
            hidden=self.hidden_spin.value(),
            iterations=self.iterations_spin.value(),
            seed=int(self.seed_spin.value()),
            output_format=self.format_combo.currentText(),
            quality=self.quality_spin.value(),
            device=self.window_.ctx.settings.device,
        )

    def run(self) -> Job | None:
        """Queue the grade the widgets describe; None (and a message) when something is missing."""
        if self.input_path is None:
            self.set_status("Open an image first (or drop one on this tab).", error=True)
            return None
        missing = [role for role in MODE_ROLES[self.mode()] if self.files[role] is None]
        if missing:
            self.set_status(ROLE_MISSING[missing[0]], error=True)
            return None
        problem = self._pair_problem() if self.mode() == "pair" else ""
        if problem:
            self.set_status(problem, error=True)
            self.window_.notifications.error(problem)
            return None
        try:
            request = self.build_request()
        except UserError as exc:
            self.window_.notifications.error(f"Cannot grade: {exc}")
            return None
        return self.submit(request)

    def submit(self, request: Any) -> Job:
        job = self.window_.submit(
            request, title=_title(request), parent_id=self.parent_id, on_finished=self._finished
        )
        self._jobs[job.id] = request
        self.set_status(f"Queued: {_title(request)}")
        return job

    def load_request(self, request: Any) -> None:
        self.open_image(Path(request.input_path))
        self.set_mode(request.mode)
        for role in MODE_ROLES[request.mode]:
            path = getattr(request, f"{role}_path")
            if path:
                self.set_file(role, Path(path))
        self.strength.setValue(round(request.strength * 100))
        self.preserve_luminance.setChecked(request.preserve_luminance)
        self.lut_size.setCurrentIndex(self.lut_size.findData(request.lut_size))
        self.layers_spin.setValue(request.coupling_layers)
        self.hidden_spin.setValue(request.hidden)
        self.iterations_spin.setValue(request.iterations)
        self.seed_spin.setValue(request.seed)
        self.format_combo.setCurrentText(request.output_format)
        self.quality_spin.setValue(request.quality)

    def job_changed(self, job: JobSnapshot) -> None:
        """Show a running grade's progress (fitting steps, baking, applying) in the tab."""
        if job.id not in self._jobs or job.state != JobState.RUNNING:
            return
        self.set_status(f"{job.message} ({job.fraction:.0%})")
        if job.preview is not None:
            self.view.set_image(qimage_from_array(job.preview), keep_view=True)

    def _finished(self, job: JobSnapshot) -> None:
        if job.id in self._batch:
            self._batch_finished(job)
            return
        self._jobs.pop(job.id, None)
        if job.state == JobState.DONE:
            entry = job.result
            self.show_result(entry)
            self.set_status(f"Done in {entry.duration_s:.1f} s — entry #{entry.id}")
        else:
            self.report_unfinished(job)

    def show_result(self, entry: Entry) -> None:
        """Show a finished grade: result over its source, colour plots, and the likelihood map."""
        result = _output(entry, RESULT_SUFFIXES)
        if result is None:
            self.window_.notifications.error(f"Entry #{entry.id} has no graded image.")
            return
        self.entry = entry
        source = entry.inputs[0].path if entry.inputs else self.input_path
        self.result_path = result
        self._result_image = load_qimage(result)
        self._set_heat(None)
        self.result_button.setChecked(True)
        self.view.set_image(self._result_image)
        self.view.set_before(load_qimage(source) if source is not None else None)
        self._refresh_plots()
        self._sync_enabled()
        self._start_likelihood(entry, source)

    # -- the likelihood view --------------------------------------------------------------
    def _start_likelihood(self, entry: Entry, source: Path | None) -> None:
        preset = _output(entry, (".json",))
        if entry.request.get("mode") not in ("reference", "preset") or not preset or not source:
            self.likelihood_button.setToolTip(NO_LIKELIHOOD)
            return
        self.likelihood_button.setToolTip("Computing the likelihood map…")
        self._start_worker(
            compute_likelihood,
            str(source),
            str(preset),
            returned=lambda result, i=entry.id: self._likelihood_ready(i, result),
            errored=lambda exc, i=entry.id: self._likelihood_failed(i, exc),
        )

    def _likelihood_ready(self, entry_id: int, result: Likelihood | None) -> None:
        if self.entry is None or self.entry.id != entry_id or self._result_image is None:
            return
        if result is None:
            self.likelihood_button.setToolTip(NO_LIKELIHOOD)
            return
        self._set_heat(result)

    def _likelihood_failed(self, entry_id: int, exc: Exception) -> None:
        if self.entry is None or self.entry.id != entry_id:
            return
        self.likelihood_button.setToolTip("The likelihood map could not be computed.")
        self.window_.notifications.error(
            f"The likelihood map of entry #{entry_id} could not be computed: {describe_error(exc)}"
        )

    def _set_heat(self, likelihood: Likelihood | None) -> None:
        self._heat_image = None if likelihood is None else qimage_from_array(likelihood.heat)
        self.legend.set_ramp(None if likelihood is None else likelihood.ramp)
        self.likelihood_button.setEnabled(likelihood is not None)
        if likelihood is None:
            self.result_button.setChecked(True)
        else:
            self.likelihood_button.setToolTip(
                "Bright: colours of the source that the reference does not contain"
            )
        self._show_view()

    def showing(self) -> str:
        """'likelihood' while the heat map is shown, else 'result'."""
        shown = self.likelihood_button.isChecked() and self._heat_image is not None
        return "likelihood" if shown else "result"

    def _show_view(self) -> None:
        likelihood = self.showing() == "likelihood"
        self.legend.setVisible(likelihood)
        image = self._heat_image if likelihood else self._result_image
        if image is not None:
            self.view.set_image(image, keep_view=True)

    # -- what a finished grade offers -----------------------------------------------------
    def export_lut(self) -> None:
        """Copy the entry's .cube LUT to a file the user chooses."""
        cube = self._entry_file(".cube", ".cube LUT")
        if cube is None:
            return
        target = self.choose_save_path(
            "Export the grade as a .cube LUT", self._suggested_path(".cube"), CUBE_FILTER
        )
        if target is None:
            return
        target = _with_suffix(target, ".cube")
        try:
            copy_atomically(cube, target)
        except OSError as exc:
            self.window_.notifications.error(describe_error(exc))
            return
        self.window_.notifications.info(f"Exported the LUT to {target}")

    def save_preset(self) -> None:
        """Write the entry's grade as a preset (.json beside its .safetensors) to apply later."""
        preset = self._entry_file(".json", "saved grade")
        if preset is None:
            return
        target = self.choose_save_path(
            "Save the grade as a preset", self._suggested_path(".json"), PRESET_SAVE_FILTER
        )
        if target is None:
            return
        from studio.engines.grade import Grade

        try:  # loading and saving again keeps the .json naming its own .safetensors
            weights, document = Grade.load(preset).save(target)
        except (UserError, OSError) as exc:
            self.window_.notifications.error(f"Could not save the grade: {describe_error(exc)}")
            return
        self.window_.notifications.info(
            f"Saved the grade as {document.name} (with {weights.name}); "
            "apply it with 'Apply a saved grade'."
        )

    def apply_to_batch(self) -> None:
        """Queue one run per chosen image with the shown entry's stored grade (no fitting)."""
        preset = self._entry_file(".json", "saved grade")
        if preset is None or self.entry is None:
            return
        paths = self.choose_open_paths("Images to grade with this grade", IMAGE_FILTER)
        if not paths:
            return
        from studio.engines.grade import GradeRequest

        try:
            shown = GradeRequest.from_dict(self.entry.request)
        except (UserError, TypeError, ValueError) as exc:
            self.window_.notifications.error(f"Entry #{self.entry.id} cannot be reused: {exc}")
            return
        for path in paths:
            request = replace(
                shown,
                input_path=str(path),
                mode="preset",
                preset_path=str(preset),
                reference_path=None,
                before_path=None,
                after_path=None,
                lut_path=None,
            )
            job = self.window_.submit(
                request, title=_title(request), parent_id=self.entry.id, on_finished=self._finished
            )
            self._batch[job.id] = Path(path).name
        self.set_status(f"Queued {len(paths)} image(s) with the grade of entry #{self.entry.id}")

    def _batch_finished(self, job: JobSnapshot) -> None:
        self._batch.pop(job.id)
        if job.state == JobState.DONE:
            self._batch_counts["done"] += 1
        else:
            self._batch_counts["failed"] += 1
            if job.state == JobState.FAILED:
                self.window_.notifications.error(f"{job.title} failed: {failure_text(job)}")
        done, failed = self._batch_counts["done"], self._batch_counts["failed"]
        if self._batch:
            self.set_status(f"Batch: {done + failed} finished, {len(self._batch)} to go")
            return
        self.set_status(f"Batch finished: {done} graded, {failed} not — see the History.")
        self._batch_counts = {"done": 0, "failed": 0}

    def _entry_file(self, suffix: str, what: str) -> Path | None:
        path = _output(self.entry, (suffix,)) if self.entry is not None else None
        if path is None:
            self.window_.notifications.error("Run a grade first: there is no " + what + " yet.")
        return path

    def _suggested_path(self, suffix: str) -> str:
        assert self.entry is not None
        name = self.entry.inputs[0].original_name if self.entry.inputs else "grade"
        folder = self.input_path.parent if self.input_path is not None else Path.home()
        return str(folder / f"{Path(name).stem}-grade{suffix}")

    # -- colour plots ---------------------------------------------------------------------
    def _refresh_plots(self) -> None:
        mode = self.mode()
        reference_role = {"reference": "reference", "pair": "after"}.get(mode)
        self.reference_plot.setVisible(reference_role is not None)
        if reference_role is not None:
            self.reference_plot.set_title(reference_role.capitalize())
            self._plot(self.reference_plot, self.files[reference_role])
        self._plot(self.source_plot, self.input_path)
        self._plot(self.result_plot, self.result_path, empty="No result yet")

    def _plot(self, plot: ChromaPlot, path: Path | None, empty: str = "No image") -> None:
        key = str(path)
        if path is None:
            plot.clear(empty)
        elif key in self._chroma:
            plot.set_samples(self._chroma[key])
        elif key in self._unreadable:
            plot.clear("Cannot be read")
        else:
            plot.clear("Reading…")
            if key not in self._sampling:
                self._sampling.add(key)
                self._start_worker(
                    sample_chroma,
                    key,
                    returned=lambda samples, k=key: self._sampled(k, samples),
                    errored=lambda exc, k=key: self._sample_failed(k, exc),
                )

    def _sampled(self, key: str, samples: ChromaSamples) -> None:
        self._sampling.discard(key)
        self._chroma[key] = samples
        self._refresh_plots()

    def _sample_failed(self, key: str, exc: Exception) -> None:
        log.warning("could not sample the colours of %s: %s", key, exc)
        self._sampling.discard(key)
        self._unreadable.add(key)
        self._refresh_plots()

    # -- helpers --------------------------------------------------------------------------
    def busy(self) -> bool:
        """Whether colour samples or a likelihood map are still being computed."""
        return bool(self._workers)

    def _start_worker(self, function, *args: Any, returned, errored) -> None:
        """Run `function(*args)` off the GUI thread; its result or error comes back here, unless
        the tab has been deleted meanwhile (the window closed)."""
        holder: list[Any] = []

        def alive(callback):
            return lambda value: callback(value) if shiboken6.isValid(self) else None

        def finished() -> None:
            self._workers.discard(holder[0])

        worker = create_worker(
            function,
            *args,
            _connect={"returned": alive(returned), "errored": alive(errored), "finished": finished},
        )
        holder.append(worker)
        self._workers.add(worker)

    def _sync_enabled(self) -> None:
        self.run_button.setEnabled(self.input_path is not None)
        entry = self.entry
        has = {
            s: entry is not None and _output(entry, (s,)) is not None for s in (".cube", ".json")
        }
        self.export_lut_button.setEnabled(has[".cube"])
        self.save_preset_button.setEnabled(has[".json"])
        self.batch_button.setEnabled(has[".json"])

    def _ask_open_path(self, caption: str, filters: str) -> Path | None:
        path, _ = QFileDialog.getOpenFileName(self, caption, "", filters)
        return Path(path) if path else None

    def _ask_open_paths(self, caption: str, filters: str) -> list[Path]:
        paths, _ = QFileDialog.getOpenFileNames(self, caption, "", filters)
        return [Path(p) for p in paths]

    def _ask_save_path(self, caption: str, suggested: str, filters: str) -> Path | None:
        path, _ = QFileDialog.getSaveFileName(self, caption, suggested, filters)
        return Path(path) if path else None

    # -- drops: images open as the source, .cube, .json and .safetensors choose what to apply -
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if _dropped_grade_file(event) is not None:
            event.acceptProposedAction()
            return
        super().dragEnterEvent(event)

    def dropEvent(self, event: QDropEvent) -> None:
        path = _dropped_grade_file(event)
        if path is None:
            super().dropEvent(event)
            return
        event.acceptProposedAction()
        role = "lut" if path.suffix.lower() == ".cube" else "preset"
        self.set_mode(role)
        self.set_file(role, path)


class _FileRow(QWidget):
    """A button that chooses a file, and the chosen file's name."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.button = QPushButton(text)
        self.label = QElidingLabel("none chosen")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.button)
        layout.addWidget(self.label, 1)

    def set_path(self, path: Path, detail: str = "") -> None:
        self.label.setText(f"{path.name} — {detail}" if detail else path.name)
        self.label.setToolTip(str(path))


def compute_likelihood(source: str, preset: str) -> Likelihood | None:
    """The likelihood view of `source` under the saved grade `preset`; None when that grade was
    not matched to a reference (a learnt edit or a LUT has no reference colours). Off the GUI
    thread: it loads the flow and evaluates every distinct colour of the source."""
    from studio.engines.grade import Grade, likelihood_map, likelihood_preview
    from studio.imaging import load_picture

    grade = Grade.load(preset)
    if getattr(grade, "kind", None) != "match":
        return None
    log_density = likelihood_map(load_picture(source), grade)
    quantiles = grade.stats.get("reference_log_density_quantiles")
    low, median = (quantiles[0], quantiles[2]) if quantiles else np.percentile(log_density, [1, 50])
    ramp = likelihood_preview(np.linspace(median, low, 256, dtype=np.float32)[None], grade)
    return Likelihood(heat=likelihood_preview(log_density, grade), ramp=ramp[0])


def _output(entry: Entry, suffixes: tuple[str, ...]) -> Path | None:
    """The entry's first output whose file name ends with one of `suffixes`."""
    for output in entry.outputs:
        if output.path.suffix.lower() in suffixes:
            return output.path
    return None


def _title(request: GradeRequest) -> str:
    name = Path(request.input_path).name
    if request.mode == "reference":
        return f"Grade {name} to match {Path(request.reference_path or '').name}"
    if request.mode == "pair":
        return f"Grade {name} with the edit {Path(request.after_path or '').name}"
    if request.mode == "lut":
        return f"Grade {name} with {Path(request.lut_path or '').name}"
    return f"Grade {name} with {Path(request.preset_path or '').name}"


def _with_suffix(path: Path, suffix: str) -> Path:
    return path if path.suffix.lower() == suffix else path.with_name(path.name + suffix)


GRADE_FILE_SUFFIXES = (".cube", ".json", ".safetensors")  # a LUT, or a saved grade


def _dropped_grade_file(event: QDragEnterEvent | QDropEvent) -> Path | None:
    for url in event.mimeData().urls():
        if url.isLocalFile() and url.toLocalFile().lower().endswith(GRADE_FILE_SUFFIXES):
            return Path(url.toLocalFile())
    return None
