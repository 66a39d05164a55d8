"""What the Generate and Inpaint tabs share: the diffusion model picker and the prompt controls.

The picker takes a recent model, a diffusers folder, a single-file checkpoint or a typed Hugging
Face repo id, and tells the model's family off the GUI thread from its configuration files only
(no weights load, nothing downloads). The controls then adapt to the family: default steps,
guidance and scheduler, and LCM only for distilled models.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)
from superqt import QLargeIntSpinBox
from superqt.utils import create_worker

from studio.app.runs import describe_error
from studio.app.settings import with_recent_diffusion_model
from studio.engines.diffusion import MAX_GUIDANCE, MAX_SEED, MAX_STEPS, SCHEDULER_TITLES
from studio.errors import UserError
from studio.models.diffusion import REPO_ID

CHOOSE_FOLDER = "\x00folder"
CHOOSE_FILE = "\x00file"
CHECKPOINT_FILTER = "Diffusion checkpoints (*.safetensors *.ckpt);;All files (*)"
NO_MODEL_TEXT = (
    "No model yet. Pick a local model — a diffusers folder (with model_index.json) or a "
    ".safetensors / .ckpt checkpoint — type a Hugging Face repo id such as "
    "stabilityai/sd-turbo (it downloads on the first run), or use Get models… to download a "
    "suggested one."
)
BASE_SCHEDULERS = tuple(name for name in SCHEDULER_TITLES if name != "lcm")


class ModelPicker(QWidget):
    """Choose a diffusion model and learn its family; `familyChanged(family, adopt_defaults)`."""

    familyChanged = Signal(object, bool)  # Family | None, whether to take its default settings

    def __init__(self, window: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.window_ = window
        self.reference = ""
        self.family: Any = None
        self._worker: Any = None
        self.combo = QComboBox()
        self.combo.setEditable(True)
        self.combo.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.combo.setMinimumContentsLength(18)
        self.combo.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.combo.lineEdit().setPlaceholderText("Pick a model, or type a repo id")
        self.combo.setToolTip(
            "A recent model, a diffusers folder, a .safetensors / .ckpt checkpoint, or a Hugging "
            "Face repo id (Return to use it)"
        )
        self.combo.activated.connect(self._activated)
        self.combo.lineEdit().returnPressed.connect(self._typed)
        self.info = QLabel(NO_MODEL_TEXT)
        self.info.setWordWrap(True)
        self.info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.get_models_button = QPushButton("Get models…")
        self.get_models_button.setToolTip("Download a suggested model (sizes shown first)")
        self.get_models_button.clicked.connect(lambda: window.open_models("diffusion"))
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.combo)
        layout.addWidget(self.info)
        layout.addWidget(self.get_models_button)
        window.modelsChanged.connect(self.refresh)
        self.refresh()

    def showEvent(self, event) -> None:
        """Follow the model last chosen in the other diffusion tab, and its recent list."""
        super().showEvent(event)
        settings = self.window_.ctx.settings
        if not self.reference and settings.diffusion_model:
            self.choose(settings.diffusion_model)
        else:
            self.refresh()

    def refresh(self) -> None:
        """List the library's installed diffusion models, then the recent ones, then the
        choosers; the chosen model stays chosen."""
        self.combo.clear()
        try:
            installed = self.window_.models.installed("diffusion")
        except UserError as exc:
            self.window_.notifications.error(str(exc))
            installed = []
        for item in installed:
            self._add(item.location, item.name)
        for reference in self.window_.ctx.settings.recent_diffusion_models:
            if Path(reference).exists() or _looks_like_repo_id(reference):
                self._add(reference, reference)
        if self.combo.count():
            self.combo.insertSeparator(self.combo.count())
        self.combo.addItem("Choose folder…", CHOOSE_FOLDER)
        self.combo.addItem("Choose checkpoint file…", CHOOSE_FILE)
        self.combo.setCurrentIndex(-1)
        self.combo.setEditText(self.reference)

    def _add(self, reference: str, label: str) -> None:
        if self.combo.findData(reference) < 0:
            self.combo.addItem(label, reference)
            self.combo.setItemData(self.combo.count() - 1, reference, Qt.ItemDataRole.ToolTipRole)

    # -- choosing -------------------------------------------------------------------------
    def choose(self, reference: str, *, adopt_defaults: bool = True) -> None:
        """Use `reference`; its family is read off the GUI thread, then `familyChanged` fires.
        `adopt_defaults` False keeps the current steps, guidance and scheduler (a stored
        request shows what it ran with)."""
        reference = reference.strip()
        self.reference = reference
        self.family = None
        self.combo.setEditText(reference)
        if not reference:
            self._show(NO_MODEL_TEXT)
            self.familyChanged.emit(None, False)
            return
        self._show(f"Reading {Path(reference).name or reference}…")
        self._worker = create_worker(
            detect_family,
            reference,
            _connect={
                "returned": lambda found, r=reference, d=adopt_defaults: self._detected(
                    r, found, d
                ),
                "errored": lambda exc, r=reference: self._failed(r, exc),
            },
        )

    def _detected(self, reference: str, found: tuple[Any, str], adopt_defaults: bool) -> None:
        if reference != self.reference:
            return  # another model was chosen meanwhile
        family, note = found
        self.family = family
        self._show(note)
        ctx = self.window_.ctx
        ctx.update_settings(with_recent_diffusion_model(ctx.settings, reference))
        self.refresh()
        self.familyChanged.emit(family, adopt_defaults and family is not None)

    def _failed(self, reference: str, exc: Exception) -> None:
        if reference != self.reference:
            return
        message = describe_error(exc)
        self._show(f"This model cannot be used: {message}", error=True)
        self.window_.notifications.error(message)
        self.familyChanged.emit(None, False)

    def _show(self, text: str, *, error: bool = False) -> None:
        self.info.setText(text)
        self.info.setStyleSheet("color:#e06060;" if error else "")

    def _activated(self, index: int) -> None:
        data = self.combo.itemData(index)
        if data == CHOOSE_FOLDER:
            chosen = QFileDialog.getExistingDirectory(self, "Choose a diffusers model folder")
        elif data == CHOOSE_FILE:
            chosen, _ = QFileDialog.getOpenFileName(
                self, "Choose a diffusion checkpoint", "", CHECKPOINT_FILTER
            )
        else:
            chosen = data or ""
        if chosen and chosen != self.reference:
            self.choose(chosen)
        else:
            self.combo.setEditText(self.reference)

    def _typed(self) -> None:
        text = self.combo.currentText().strip()
        if text != self.reference:
            self.choose(text)


def _looks_like_repo_id(reference: str) -> bool:
    return bool(REPO_ID.match(reference)) and not reference.startswith(("/", "."))


def detect_family(reference: str) -> tuple[Any, str]:
    """(family or None, a line describing the model), from files on this computer only: nothing
    downloads from the picker. Runs on a worker thread."""
    from studio.models.diffusion import peek_family

    family, note = peek_family(reference)
    if family is None:
        return None, note or ""
    text = describe_family(family)
    return family, f"{text} · {note}" if note else text


def describe_family(family: Any) -> str:
    text = f"{family.title} · native {family.native} px"
    if family.inpainting:
        text += " · an inpainting model: use it in the Inpaint tab"
    return text


class DiffusionControls(QWidget):
    """Model, prompt, negative prompt, steps, guidance, scheduler and seed; tabs add rows."""

    familyChanged = Signal(object, bool)  # re-emitted from the picker after the controls adapted

    def __init__(self, window: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.picker = ModelPicker(window, self)
        self.prompt = QPlainTextEdit()
        self.prompt.setPlaceholderText("What to paint, e.g. a ceramic mug on a linen tablecloth")
        self.prompt.setTabChangesFocus(True)
        self.prompt.setFixedHeight(84)
        self.negative = QPlainTextEdit()
        self.negative.setPlaceholderText("What to avoid (optional)")
        self.negative.setTabChangesFocus(True)
        self.negative.setFixedHeight(48)
        self.steps = QSpinBox(minimum=1, maximum=MAX_STEPS, value=25)
        self.guidance = QDoubleSpinBox(minimum=0.0, maximum=MAX_GUIDANCE, singleStep=0.5, value=7.0)
        self.guidance.setToolTip("How closely to follow the prompt (0 for Turbo models)")
        self.scheduler = QComboBox()
        self.set_schedulers(BASE_SCHEDULERS)
        self.seed = QLargeIntSpinBox()
        self.seed.setRange(0, MAX_SEED)
        self.seed.setValue(random_seed())
        self.seed.setToolTip("The same model, settings and seed give the same image")
        self.seed.lineEdit().textEdited.connect(lambda _text: self.seed_lock.setChecked(True))
        self.seed_lock = QToolButton()
        self.seed_lock.setCheckable(True)
        self.seed_lock.setText("Lock")
        self.seed_lock.setToolTip("Locked: every run uses this seed. Unlocked: a new random seed")
        self.dice = QToolButton()
        self.dice.setText("⚄")
        self.dice.setToolTip("Pick a random seed now")
        self.dice.clicked.connect(lambda: self.seed.setValue(random_seed()))
        self.picker.familyChanged.connect(self._family_changed)

        seed_row = QHBoxLayout()
        seed_row.addWidget(self.seed, 1)
        seed_row.addWidget(self.dice)
        seed_row.addWidget(self.seed_lock)
        self.form = QFormLayout(self)
        self.form.setContentsMargins(0, 0, 0, 0)
        self.form.addRow("Model", self.picker)
        self.form.addRow("Prompt", self.prompt)
        self.form.addRow("Negative", self.negative)
        self.form.addRow("Steps", self.steps)
        self.form.addRow("Guidance", self.guidance)
        self.form.addRow("Scheduler", self.scheduler)
        self.form.addRow("Seed", seed_row)

    @property
    def family(self) -> Any:
        return self.picker.family

    def set_schedulers(self, names: tuple[str, ...], current: str | None = None) -> None:
        current = current or self.scheduler.currentData()
        self.scheduler.clear()
        for name in names:
            self.scheduler.addItem(SCHEDULER_TITLES[name], name)
        index = self.scheduler.findData(current)
        self.scheduler.setCurrentIndex(max(index, 0))

    def _family_changed(self, family: Any, adopt_defaults: bool) -> None:
        if family is not None:
            current = family.default_scheduler if adopt_defaults else None
            self.set_schedulers(family.schedulers, current)
            if adopt_defaults:
                self.steps.setValue(family.default_steps)
                self.guidance.setValue(family.default_guidance)
        self.familyChanged.emit(family, adopt_defaults)

    def seed_for_run(self) -> int:
        """The seed this run uses, shown in the box: a new random one unless the seed is locked."""
        if not self.seed_lock.isChecked():
            self.seed.setValue(random_seed())
        return int(self.seed.value())

    def values(self) -> dict[str, Any]:
        """The request fields these controls decide (the seed is taken by `seed_for_run`)."""
        return {
            "model": self.picker.reference,
            "prompt": self.prompt.toPlainText().strip(),
            "negative_prompt": self.negative.toPlainText().strip(),
            "steps": self.steps.value(),
            "guidance": round(self.guidance.value(), 2),
            "scheduler": self.scheduler.currentData(),
        }

    def load(self, request: Any) -> None:
        """Show a stored request's shared fields; its seed is locked, so Generate repeats it."""
        if request.model != self.picker.reference:
            self.picker.choose(request.model, adopt_defaults=False)
        self.prompt.setPlainText(request.prompt)
        self.negative.setPlainText(request.negative_prompt)
        self.steps.setValue(request.steps)
        self.guidance.setValue(request.guidance)
        names = self.family.schedulers if self.family is not None else BASE_SCHEDULERS
        if request.scheduler not in names:
            names = (*names, request.scheduler)
        self.set_schedulers(names, request.scheduler)
        self.seed.setValue(request.seed)
        self.seed_lock.setChecked(True)


def random_seed() -> int:
    return random.SystemRandom().randrange(MAX_SEED + 1)
