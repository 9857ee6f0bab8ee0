"""Tests of the configuration model, its TOML loader and the generated example."""

from __future__ import annotations

import inspect
from pathlib import Path

import pydantic
import pytest

from sipwarden.config import (
    DEFAULT_CONFIG_FILE,
    Config,
    LogConfig,
    MonitorConfig,
    ParserConfig,
    SipConfig,
    load_config,
    parse_config,
    render_example_config,
    resolve_config_path,
)
from sipwarden.errors import ConfigError, SipwardenError

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _in_empty_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The repository root holds the example sipwarden.toml: never pick it up by accident.
    monkeypatch.chdir(tmp_path)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str, name: str = "bad.toml") -> ConfigError:
    path = write(tmp_path / name, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value


# ---------------------------------------------------------------- defaults and finding the file


def test_defaults_when_no_file() -> None:
    config = load_config(None)
    assert config == Config()
    assert config.log.level == "info"
    assert config.log.format == "text"
    assert config.sip.ports == (5060, 5061)
    assert config.parser.max_message_size == 65536
    assert config.parser.max_header_count == 128
    assert config.parser.max_line_length == 8192
    assert config.monitor.sniff_any_port is True
    assert resolve_config_path(None) is None


def test_reads_sipwarden_toml_from_the_working_directory(tmp_path: Path) -> None:
    write(tmp_path / DEFAULT_CONFIG_FILE, '[log]\nlevel = "debug"\n')
    assert resolve_config_path(None) == Path(DEFAULT_CONFIG_FILE)
    assert load_config(None).log.level == "debug"


def test_broken_default_file_is_an_error_not_ignored(tmp_path: Path) -> None:
    write(tmp_path / DEFAULT_CONFIG_FILE, "[sip]\nprots = [5060]\n")
    with pytest.raises(ConfigError) as info:
        load_config(None)
    assert info.value.file == DEFAULT_CONFIG_FILE
    assert info.value.key_path == "sip.prots"


def test_explicit_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml")
    error = info.value
    assert isinstance(error, SipwardenError)
    assert error.file is not None
    assert error.file.endswith("nope.toml")
    assert "not found" in str(error)
    assert "nope.toml" in str(error)
    assert "sipwarden config example" in str(error)


def test_relative_path_is_reported_as_given(tmp_path: Path) -> None:
    write(tmp_path / "rel.toml", "[parser]\nmax_header_count = 1\n")
    with pytest.raises(ConfigError) as info:
        load_config("rel.toml")
    assert str(info.value).startswith("rel.toml: parser.max_header_count: ")


def test_directory_is_not_a_config_file(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path / "conf.d")


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[log]\nlevel = "d\xe9bug"\n')
    with pytest.raises(ConfigError, match=r"not UTF-8 .*0xe9 at offset 16") as info:
        load_config(path)
    assert info.value.file == str(path)


def test_utf8_bom_is_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "bom.toml"
    path.write_bytes(b'\xef\xbb\xbf[log]\nlevel = "error"\n')
    assert load_config(path).log.level == "error"


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path / "empty.toml", "")) == Config()


def test_full_file_is_read(tmp_path: Path) -> None:
    text = """
        [log]
        level = "warning"
        format = "json"
        [sip]
        ports = [5060, 5080, 15060]
        [parser]
        max_message_size = 1024
        max_header_count = 8
        max_line_length = 256
        [monitor]
        sniff_any_port = false
    """
    config = load_config(write(tmp_path / "full.toml", inspect.cleandoc(text)))
    assert config.log == LogConfig(level="warning", format="json")
    assert config.sip == SipConfig(ports=(5060, 5080, 15060))
    assert config.parser == ParserConfig(
        max_message_size=1024, max_header_count=8, max_line_length=256
    )
    assert config.monitor == MonitorConfig(sniff_any_port=False)


def test_upper_bounds_are_accepted(tmp_path: Path) -> None:
    text = "[parser]\nmax_message_size = 1048576\nmax_line_length = 1048576\n"
    config = load_config(write(tmp_path / "max.toml", text))
    assert config.parser.max_message_size == config.parser.max_line_length == 1024 * 1024


def test_config_is_frozen_and_hashable() -> None:
    config = Config()
    with pytest.raises(pydantic.ValidationError):
        config.sip.ports = (5070,)
    assert hash(config) == hash(Config())


# ---------------------------------------------------------------- validation errors


@pytest.mark.parametrize(
    ("text", "key_path", "expected", "found"),
    [
        ('[log]\nlevel = "verbose"\n', "log.level", '"debug", "info", "warning" or "error"',
         '"verbose" (a string)'),
        ('[log]\nlevel = "INFO"\n', "log.level", "expected one of", '"INFO"'),
        ("[log]\nformat = 1\n", "log.format", 'expected one of "text" or "json"',
         "1 (an integer)"),
        ('[sip]\nports = "5060"\n', "sip.ports", "expected an array", '"5060" (a string)'),
        ("[sip]\nports = 5060\n", "sip.ports", "expected an array", "5060 (an integer)"),
        ('[sip]\nports = [5060, "5061"]\n', "sip.ports[1]", "expected an integer",
         '"5061" (a string)'),
        ("[sip]\nports = [true]\n", "sip.ports[0]", "expected an integer", "true (a boolean)"),
        ("[sip]\nports = [0]\n", "sip.ports[0]", "expected an integer from 1 to 65535",
         "found 0"),
        ("[sip]\nports = [5060, 65536]\n", "sip.ports[1]", "from 1 to 65535", "found 65536"),
        ("[sip]\nports = []\n", "sip.ports", "at least one port is needed", "found [] (an array)"),
        ("[sip]\nports = [5060, 5061, 5060]\n", "sip.ports", "port 5060 is listed more than once",
         "[5060, 5061, 5060]"),
        ('[parser]\nmax_message_size = "64k"\n', "parser.max_message_size",
         "expected an integer", '"64k" (a string)'),
        ("[parser]\nmax_message_size = 65536.0\n", "parser.max_message_size",
         "expected an integer", "65536.0 (a float)"),
        ("[parser]\nmax_message_size = 1023\n", "parser.max_message_size",
         "expected an integer from 1024 to 1048576", "found 1023 (an integer)"),
        ("[parser]\nmax_message_size = 1048577\n", "parser.max_message_size",
         "from 1024 to 1048576", "found 1048577"),
        ("[parser]\nmax_header_count = 0\n", "parser.max_header_count", "from 8 to 4096",
         "found 0"),
        ("[parser]\nmax_header_count = -5\n", "parser.max_header_count", "from 8 to 4096",
         "found -5"),
        ("[parser]\nmax_line_length = 100\n", "parser.max_line_length", "from 256 to 1048576",
         "found 100"),
        ("[parser]\nmax_message_size = 4096\nmax_line_length = 8192\n", "parser.max_line_length",
         "cannot be larger than parser.max_message_size (4096)", "found 8192"),
        ('[monitor]\nsniff_any_port = "yes"\n', "monitor.sniff_any_port",
         "expected true or false", '"yes" (a string)'),
        ("[monitor]\nsniff_any_port = 1\n", "monitor.sniff_any_port", "expected true or false",
         "1 (an integer)"),
        ('log = "debug"\n', "log", "expected a table", '"debug" (a string)'),
    ],
)  # fmt: skip
def test_bad_value_names_file_key_expected_and_found(
    tmp_path: Path, text: str, key_path: str, expected: str, found: str
) -> None:
    error = load_error(tmp_path, text)
    assert error.file == str(tmp_path / "bad.toml")
    assert error.key_path == key_path
    message = str(error)
    assert message.startswith(f"{tmp_path / 'bad.toml'}: {key_path}: ")
    assert expected in message
    assert found in message


SECTIONS = list(Config.model_fields)


@pytest.mark.parametrize("section", SECTIONS)
def test_unknown_key_in_each_section_is_an_error(tmp_path: Path, section: str) -> None:
    error = load_error(tmp_path, f"[{section}]\nno_such_key = 1\n")
    assert error.key_path == f"{section}.no_such_key"
    assert f"unknown key 'no_such_key' in [{section}]" in str(error)
    assert "bad.toml" in str(error)


def test_typo_suggests_the_key_meant(tmp_path: Path) -> None:
    error = load_error(tmp_path, "[sip]\nprots = [5060]\n")
    assert error.key_path == "sip.prots"
    assert "did you mean 'ports'?" in str(error)


def test_unknown_section_is_an_error(tmp_path: Path) -> None:
    error = load_error(tmp_path, "[monitr]\nsniff_any_port = false\n")
    assert error.key_path == "monitr"
    message = str(error)
    assert "unknown section [monitr]" in message
    assert "did you mean 'monitor'?" in message
    assert "[log], [sip], [parser], [monitor]" in message


def test_unknown_subtable_is_an_error(tmp_path: Path) -> None:
    error = load_error(tmp_path, "[sip.tls]\nport = 5061\n")
    assert error.key_path == "sip.tls"
    assert "unknown key 'tls' in [sip]" in str(error)


def test_key_outside_its_section_says_where_it_belongs(tmp_path: Path) -> None:
    error = load_error(tmp_path, "max_message_size = 4096\n")
    assert error.key_path == "max_message_size"
    assert "top level" in str(error)
    assert "it belongs in [parser]" in str(error)


def test_every_error_is_reported_at_once(tmp_path: Path) -> None:
    text = """
        [log]
        level = "loud"
        [sip]
        prots = [5060]
        ports = [70000]
        [parser]
        max_message_size = 10
        [monitor]
        sniff_any_port = "no"
        [extra]
    """
    error = load_error(tmp_path, inspect.cleandoc(text))
    message = str(error)
    assert message.startswith(f"{tmp_path / 'bad.toml'}: 6 problems:\n")
    lines = message.splitlines()[1:]
    assert [line.split(":")[0].strip() for line in lines] == [
        "log.level",
        "sip.ports[0]",
        "sip.prots",
        "parser.max_message_size",
        "monitor.sniff_any_port",
        "extra",
    ]
    assert error.file == str(tmp_path / "bad.toml")


@pytest.mark.parametrize(
    ("text", "where", "line_text"),
    [
        ("[sip]\nports = [5060,, 5061]\n", "line 2, column 15", "ports = [5060,, 5061]"),
        ("[log]\nlevel = debug\n", "line 2, column 9", "level = debug"),
        ('[log]\nlevel = "info"\nlevel = "debug"\n', "line 3, column 16", 'level = "debug"'),
        ("[parser\n", "line 1, column 8", "[parser"),
    ],
)
def test_bad_toml_names_line_and_column(
    tmp_path: Path, text: str, where: str, line_text: str
) -> None:
    error = load_error(tmp_path, text)
    message = str(error)
    assert message.startswith(f"{tmp_path / 'bad.toml'}: not valid TOML at {where}: ")
    assert line_text in message
    assert error.file == str(tmp_path / "bad.toml")


def test_bad_toml_at_end_of_file(tmp_path: Path) -> None:
    error = load_error(tmp_path, "[sip]\nports = [5060")
    assert "not valid TOML at the end of the file" in str(error)


def test_parse_config_without_a_file_name() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("[parser]\nmax_header_count = 2\n")
    assert info.value.file is None
    assert str(info.value).startswith("parser.max_header_count: expected an integer from 8")


# ---------------------------------------------------------------- the model and its example


def _is_section(annotation: object) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel)


def _sections(model: type[pydantic.BaseModel] = Config) -> list[type[pydantic.BaseModel]]:
    """Every section, nested ones ([detect.flood]) included."""
    found = []
    for field in model.model_fields.values():
        assert _is_section(field.annotation)
        assert isinstance(field.annotation, type)
        found.append(field.annotation)
        found.extend(
            sub.annotation
            for sub in field.annotation.model_fields.values()
            if isinstance(sub.annotation, type) and _is_section(sub.annotation)
        )
    return found


@pytest.mark.parametrize("section", _sections(), ids=lambda section: section.__name__)
def test_every_section_and_key_is_documented(section: type[pydantic.BaseModel]) -> None:
    assert section.__dict__.get("__doc__"), f"{section.__name__} needs a docstring"
    assert section.model_config.get("extra") == "forbid"
    assert section.model_config.get("frozen") is True
    for name, field in section.model_fields.items():
        assert field.description, f"{section.__name__}.{name} needs Field(description=...)"


def test_committed_example_matches_the_model() -> None:
    committed = (REPO_ROOT / "sipwarden.toml").read_text(encoding="utf-8")
    assert committed == render_example_config(), (
        "sipwarden.toml is out of date: run `sipwarden config example > sipwarden.toml`"
    )


def test_example_loads_to_the_defaults(tmp_path: Path) -> None:
    path = write(tmp_path / "example.toml", render_example_config())
    assert load_config(path) == Config()


def test_example_documents_every_key() -> None:
    example = render_example_config()
    for section_name, field in Config.model_fields.items():
        assert f"\n[{section_name}]\n" in example
        assert isinstance(field.annotation, type)
        assert issubclass(field.annotation, pydantic.BaseModel)
        for key, sub in field.annotation.model_fields.items():
            if _is_section(sub.annotation):
                assert f"\n[{section_name}.{key}]\n" in example
            else:
                assert f"\n{key} = " in example
    assert "Allowed: 1024 to 1048576." in example
    assert "Allowed: 1 to 65535 each." in example
    assert all(len(line) <= 100 for line in example.splitlines())


def test_parser_defaults_are_the_parsers_own() -> None:
    from sipwarden.sip.limits import DEFAULT_LIMITS  # noqa: PLC0415 - the link under test

    parser = Config().parser
    assert parser.max_message_size == DEFAULT_LIMITS.max_message_size
    assert parser.max_header_count == DEFAULT_LIMITS.max_header_count
    assert parser.max_line_length == DEFAULT_LIMITS.max_line_length
