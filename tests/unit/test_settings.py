"""Settings come from EVALFLEET_* variables, a `.env` file in the working directory, and CLI options."""

from __future__ import annotations

from shared.settings import configure, get_settings, reset_settings


def test_a_dot_env_file_in_the_working_directory_is_read(tmp_path, monkeypatch):
    monkeypatch.delenv("EVALFLEET_LOG_DIR", raising=False)
    (tmp_path / ".env").write_text("EVALFLEET_LOG_DIR=from-dotenv\nEVALFLEET_CONCURRENCY=7\n")
    reset_settings()
    settings = get_settings()
    assert (settings.log_dir, settings.concurrency) == ("from-dotenv", 7)


def test_environment_variables_win_over_the_dot_env_file(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("EVALFLEET_LOG_DIR=from-dotenv\n")
    monkeypatch.setenv("EVALFLEET_LOG_DIR", "from-environment")
    reset_settings()
    assert get_settings().log_dir == "from-environment"


def test_cli_options_win_over_the_environment(monkeypatch):
    monkeypatch.setenv("EVALFLEET_LOG_DIR", "from-environment")
    reset_settings()
    assert configure(log_dir="from-option").log_dir == "from-option"
    assert configure(log_dir=None).log_dir == "from-option"  # an unset option changes nothing


def test_the_result_store_index_defaults_to_a_redis_broker_only(monkeypatch):
    monkeypatch.setenv("EVALFLEET_BROKER_URL", "redis://127.0.0.1:6379/3")
    reset_settings()
    assert get_settings().effective_redis_url == "redis://127.0.0.1:6379/3"
    monkeypatch.setenv("EVALFLEET_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
    reset_settings()
    assert get_settings().effective_redis_url is None


def test_allowed_modules_are_a_comma_separated_list(monkeypatch):
    monkeypatch.setenv("EVALFLEET_ALLOWED_MODULES", " mypkg.tasks , other ,")
    reset_settings()
    assert get_settings().allowed_module_prefixes == ["mypkg.tasks", "other"]
