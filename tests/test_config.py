"""Settings: defaults, .env, and one clear line for every bad value (never the secret itself)."""

from pathlib import Path

import pytest

from bot.config import ConfigError, Settings, load_settings

SETTING_NAMES = [name.upper() for name in Settings.model_fields]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_the_edit_backend_has_no_default_and_sqlite_does() -> None:
    settings = load_settings()
    assert settings.edit_api_style is None  # a key belongs to one vendor: never guessed
    assert settings.edit_api_url is None and settings.edit_model is None  # the style's own
    assert settings.telegram_api_url == "https://api.telegram.org"
    assert settings.database_url.startswith("sqlite")
    assert settings.telegram_bot_token is None


def test_an_env_from_before_the_retirement_names_it_and_the_styles(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EDIT_API_KEY", "sk-old-stepfun-key")
    with pytest.raises(ConfigError) as info:
        load_settings().edit_style()
    line = str(info.value)
    assert "\n" not in line and "sk-old" not in line
    assert "retired" in line and "2026-10-10" in line and "EDIT_API_STYLE" in line
    assert all(style in line for style in ("openai", "gemini", "fal", "omni", "stepfun"))


@pytest.mark.parametrize(
    ("url", "style"),
    [
        ("https://api.openai.com/v1", "openai"),
        ("https://generativelanguage.googleapis.com/v1beta", "gemini"),
        ("https://queue.fal.run", "fal"),
        ("https://api.stepfun.ai/v1", "stepfun"),
        ("https://api.deepinfra.com/v1/openai", "openai"),
    ],
)
def test_the_style_is_inferred_from_a_vendors_host(
    monkeypatch: pytest.MonkeyPatch, url: str, style: str
) -> None:
    monkeypatch.setenv("EDIT_API_URL", url)
    assert load_settings().edit_style() == style


def test_an_unknown_host_needs_a_style(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDIT_API_URL", "http://gpu-box:8000/v1")
    with pytest.raises(ConfigError, match="EDIT_API_STYLE"):
        load_settings().edit_style()
    monkeypatch.setenv("EDIT_API_STYLE", "omni")
    assert load_settings().edit_style() == "omni"


def test_reads_dotenv_and_blank_tokens_count_as_unset(tmp_path) -> None:
    (tmp_path / ".env").write_text(
        "TELEGRAM_BOT_TOKEN=123456:ABCDEFGHIJKLMNOP\nDISCORD_BOT_TOKEN=\nDAILY_QUOTA=5\n"
        "EDIT_API_URL=http://127.0.0.1:9/v1/\n"
    )
    settings = load_settings()
    assert settings.telegram_bot_token is not None
    assert settings.telegram_bot_token.get_secret_value() == "123456:ABCDEFGHIJKLMNOP"
    assert settings.discord_bot_token is None
    assert settings.daily_quota == 5
    assert settings.edit_api_url == "http://127.0.0.1:9/v1"


def test_every_bad_value_is_named_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAILY_QUOTA", "lots")
    monkeypatch.setenv("DEFAULT_STEPS", "99")
    monkeypatch.setenv("EDIT_API_STYLE", "azure")
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "not-a-token-secret-value")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message
    for name in ("DAILY_QUOTA", "DEFAULT_STEPS", "EDIT_API_STYLE", "TELEGRAM_BOT_TOKEN"):
        assert name in message
    assert "not-a-token-secret-value" not in message


def test_the_global_api_cap_is_off_unless_set_and_at_least_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_settings().global_api_concurrency is None
    monkeypatch.setenv("GLOBAL_API_CONCURRENCY", "")  # as .env.example leaves it
    assert load_settings().global_api_concurrency is None
    monkeypatch.setenv("GLOBAL_API_CONCURRENCY", "6")
    assert load_settings().global_api_concurrency == 6
    monkeypatch.setenv("GLOBAL_API_CONCURRENCY", "0")
    with pytest.raises(ConfigError, match="GLOBAL_API_CONCURRENCY"):
        load_settings()


def test_secrets_are_hidden_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDIT_API_KEY", "sk-very-secret")
    settings = load_settings()
    assert "sk-very-secret" not in repr(settings)
    assert settings.secrets() == ["sk-very-secret"]


def test_every_setting_is_documented_in_env_example_and_readme() -> None:
    root = Path(__file__).resolve().parent.parent
    example = (root / ".env.example").read_text(encoding="utf-8")
    readme = (root / "README.md").read_text(encoding="utf-8")
    for name in SETTING_NAMES:
        assert f"\n{name}=" in example, f"{name} missing from .env.example"
        assert f"`{name}`" in readme, f"{name} missing from README.md"


def test_a_style_that_does_not_match_the_urls_vendor_stops_before_any_key_is_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # an operator who moved to Gemini but kept the old StepFun URL from .env.example
    monkeypatch.setenv("EDIT_API_STYLE", "gemini")
    monkeypatch.setenv("EDIT_API_URL", "https://api.stepfun.com/v1")
    with pytest.raises(ConfigError, match="wrong vendor"):
        load_settings().edit_style()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ADMIN_IDS", "１２３"),  # full-width digits never match a platform's id
        ("ADMIN_IDS", "١٢٣"),
        ("ADMIN_IDS", "²"),
        ("ADMIN_IDS", "0123"),
        ("ALLOWED_USERS", "-100123"),  # a group's id in a list of people
        ("ALLOWED_CHATS", "telegram:٣"),
    ],
)
def test_ids_that_would_never_match_stop_start_up(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert name in str(info.value) and "\n" not in str(info.value)


def test_chat_lists_take_group_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLOWED_CHATS", "-100123, discord:456")
    monkeypatch.setenv("ADMIN_IDS", "telegram:9")
    rules = load_settings().rules()
    assert ("telegram", "-100123") in rules.allowed_chats
    assert ("telegram", "9") in rules.admins and ("discord", "9") not in rules.admins


def test_without_a_shard_count_discord_is_one_unsharded_connection() -> None:
    settings = load_settings()
    assert settings.discord_shard_count is None and settings.discord_shards() is None


def test_blank_shard_settings_are_unset(tmp_path) -> None:
    (tmp_path / ".env").write_text("DISCORD_SHARD_COUNT=\nDISCORD_SHARD_IDS=\n")
    assert load_settings().discord_shards() is None


@pytest.mark.parametrize(
    ("count", "ids", "held"),
    [
        ("4", None, [0, 1, 2, 3]),  # a count alone: every shard in this process
        ("16", "0-3,8", [0, 1, 2, 3, 8]),
        ("16", " 8 , 2 - 3 ", [2, 3, 8]),  # any order, spaces allowed
        ("2", "1", [1]),
        ("1", "0", [0]),
        ("8", "5-5", [5]),
    ],
)
def test_shard_ids_are_ids_and_ranges_of_the_count(
    monkeypatch: pytest.MonkeyPatch, count: str, ids: str | None, held: list[int]
) -> None:
    monkeypatch.setenv("DISCORD_SHARD_COUNT", count)
    if ids is not None:
        monkeypatch.setenv("DISCORD_SHARD_IDS", ids)
    assert load_settings().discord_shards() == held


@pytest.mark.parametrize(
    ("count", "ids", "says"),
    [
        (None, "0", "needs DISCORD_SHARD_COUNT"),
        ("4", "4", "shard 4 is not below DISCORD_SHARD_COUNT 4 (ids run from 0 to 3)"),
        ("4", "2-7", "shard 7 is not below DISCORD_SHARD_COUNT 4"),
        ("8", "0-3,2", "shard 2 is named twice"),
        ("8", "1,1", "shard 1 is named twice"),
        ("8", "0-3,3-5", "shard 3 is named twice"),
        ("8", "3-1", "the range '3-1' runs backwards (write 1-3)"),
        ("8", "0,,1", "'' is not a shard id or range"),
        ("8", "-1", "'-1' is not a shard id or range"),
        ("8", "one", "'one' is not a shard id or range (write them as 0-3,8)"),
        ("8", "0;1", "'0;1' is not a shard id or range"),
        ("8", "１", "'１' is not a shard id or range"),  # a full-width digit
    ],
)
def test_a_shard_id_mistake_stops_start_up_with_one_line(
    monkeypatch: pytest.MonkeyPatch, count: str | None, ids: str, says: str
) -> None:
    if count is not None:
        monkeypatch.setenv("DISCORD_SHARD_COUNT", count)
    monkeypatch.setenv("DISCORD_SHARD_IDS", ids)
    with pytest.raises(ConfigError) as info:
        load_settings()
    line = str(info.value)
    assert line.startswith("invalid setting DISCORD_SHARD_IDS: ") and "\n" not in line
    assert says in line


@pytest.mark.parametrize("count", ["0", "-2", "two"])
def test_a_shard_count_mistake_is_named_once(monkeypatch: pytest.MonkeyPatch, count: str) -> None:
    monkeypatch.setenv("DISCORD_SHARD_COUNT", count)
    monkeypatch.setenv("DISCORD_SHARD_IDS", "0")  # not blamed for the count's mistake
    with pytest.raises(ConfigError) as info:
        load_settings()
    line = str(info.value)
    assert line.startswith("invalid setting DISCORD_SHARD_COUNT: ") and "\n" not in line
    assert "DISCORD_SHARD_IDS" not in line


def test_selling_for_stars_takes_price_edits_and_a_support_contact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert not load_settings().rules().selling  # unset: the bot sells nothing
    monkeypatch.setenv("STARS_PACK_PRICE", "50")
    with pytest.raises(ConfigError, match="STARS_PACK_EDITS") as info:
        load_settings().rules()  # both or neither
    assert "\n" not in str(info.value)
    monkeypatch.setenv("STARS_PACK_EDITS", "10")
    with pytest.raises(ConfigError, match="PAYMENT_SUPPORT"):
        load_settings().rules()  # Telegram requires /paysupport of bots that sell
    monkeypatch.setenv("PAYMENT_SUPPORT", " @operator ")
    rules = load_settings().rules()
    assert (rules.selling, rules.stars_pack_price, rules.stars_pack_edits) == (True, 50, 10)
    assert rules.payment_support == "@operator"
    monkeypatch.setenv("STARS_PACK_PRICE", "0")
    with pytest.raises(ConfigError, match="STARS_PACK_PRICE"):
        load_settings()
