"""Settings persist in a versioned file and a damaged file never stops Studio from starting."""

import json

from studio.app.settings import (
    Settings,
    load_settings,
    save_settings,
    settings_path,
    with_recent_model,
)


def test_settings_round_trip_under_studio_home(studio_home):
    settings = Settings(device="cpu", precision="fp32", tile_size=256, output_format="webp")
    save_settings(settings)
    assert settings_path().is_relative_to(studio_home)
    assert load_settings() == settings
    data = json.loads(settings_path().read_text())
    assert data["version"] == 1


def test_missing_file_gives_defaults():
    assert load_settings() == Settings()


def test_corrupt_file_is_set_aside_and_defaults_used():
    path = settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{ not json")
    assert load_settings() == Settings()
    assert path.with_name("settings.json.bad").read_text() == "{ not json"


def test_unknown_version_and_invalid_values_fall_back_per_field():
    path = settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"version": 99, "settings": {"device": "cpu"}}))
    assert load_settings() == Settings()
    path.write_text(
        json.dumps(
            {
                "version": 1,
                "settings": {"device": "tpu", "tile_size": 7, "jpeg_quality": 80, "extra": 1},
            }
        )
    )
    loaded = load_settings()
    assert loaded.device == "auto"
    assert loaded.tile_size == 0
    assert loaded.jpeg_quality == 80


def test_recent_models_keep_newest_first_without_duplicates():
    settings = Settings()
    for name in ["a.pth", "b.pth", "a.pth"]:
        settings = with_recent_model(settings, name)
    assert settings.recent_models == ("a.pth", "b.pth")
    save_settings(settings)
    assert load_settings().recent_models == ("a.pth", "b.pth")


def test_a_restoration_model_is_recent_but_not_the_upscale_choice(tmp_path):
    from studio.app.settings import Settings, with_recent_file
    from studio.models.shipped import shipped_restorers

    settings = Settings(upscale_model="/models/x4.pth")
    chosen = with_recent_file(settings, str(tmp_path / "scunet.pth"))
    assert chosen.recent_models == (str(tmp_path / "scunet.pth"),)
    assert chosen.upscale_model == "/models/x4.pth"
    built_in = str(shipped_restorers()[0])
    assert with_recent_file(chosen, built_in) == chosen  # built-in models are always listed
