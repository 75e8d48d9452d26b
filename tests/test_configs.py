"""Configs: presets load, errors name the field path / file and line, overrides, dump round trip."""

import copy

import pytest

from arenas.presets import preset
from debate.configs import (
    ConfigError,
    EntryConfig,
    TournamentConfig,
    apply_override,
    dump,
    load_tournament,
    parse_value,
    read_yaml,
)
from debate.protocols import PROTOCOLS


def _smoke() -> dict:
    return copy.deepcopy(preset("smoke"))


def test_smoke_preset_loads() -> None:
    cfg = load_tournament(_smoke(), "smoke")
    assert isinstance(cfg, TournamentConfig)
    assert cfg.name == "smoke"
    assert [p.name for p in cfg.policies] == ["smollm", "judge"]
    assert all(isinstance(e, EntryConfig) for e in cfg.entries) and len(cfg.entries) == 2
    assert cfg.entries[0].temperature == 0.3 and isinstance(cfg.entries[0].temperature, float)
    assert [p.name for p in cfg.protocols] == ["debate", "consultancy", "blind", "expert"]
    assert cfg.protocols[0].word_limit == 36
    assert cfg.judge.policy == "judge" and cfg.policy("judge").num_cpus == 0.5


def test_unknown_preset_lists_known() -> None:
    with pytest.raises(ConfigError, match="smoke"):
        preset("nope")


def test_unknown_field_names_path_and_known_fields() -> None:
    data = _smoke()
    data["entries"][0]["temprature"] = 0.5
    with pytest.raises(ConfigError) as err:
        load_tournament(data, "smoke")
    msg = str(err.value)
    assert "entries[0]" in msg and "temprature" in msg
    assert "temperature" in msg and "max_new_tokens" in msg  # the known fields


def test_unknown_top_level_field() -> None:
    data = _smoke()
    data["sampels"] = 2
    with pytest.raises(ConfigError, match="sampels") as err:
        load_tournament(data)
    assert "samples" in str(err.value)


def test_unknown_protocol_lists_known() -> None:
    data = _smoke()
    data["protocols"][0]["name"] = "duel"
    with pytest.raises(ConfigError, match="duel") as err:
        load_tournament(data)
    for name in PROTOCOLS:
        assert name in str(err.value)


def test_entry_with_unknown_policy() -> None:
    data = _smoke()
    data["entries"][1]["policy"] = "gpt9"
    with pytest.raises(ConfigError, match="gpt9") as err:
        load_tournament(data)
    msg = str(err.value)
    assert "assertive-t1.0" in msg and "smollm" in msg


def test_bad_yaml_names_file_and_line(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nquestions: {n: 3\nseed: 0\nfoo: [1, 2\n")
    with pytest.raises(ConfigError) as err:
        read_yaml(path)
    msg = str(err.value)
    assert str(path) in msg
    assert "line " in msg and "YAML" in msg


def test_bad_yaml_line_number_is_right(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nseed: 0\nsamples: 1\nentries: [\n  - a: b\n")
    with pytest.raises(ConfigError) as err:
        read_yaml(path)
    import re

    line = int(re.search(r"line (\d+)", str(err.value)).group(1))
    assert 4 <= line <= 6


def test_missing_file(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist") as err:
        read_yaml(tmp_path / "nope.yaml")
    assert "nope.yaml" in str(err.value)


def test_top_level_must_be_mapping(tmp_path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        read_yaml(path)


def test_read_yaml_good_file(tmp_path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(dump(load_tournament(_smoke())))
    assert load_tournament(read_yaml(path)) == load_tournament(_smoke())


def test_apply_override() -> None:
    data = _smoke()
    apply_override(data, "protocols.0.rounds", parse_value("1"))
    apply_override(data, "questions.n", parse_value("3"))
    apply_override(data, "ray.num_cpus", parse_value("4"))  # a section absent from the data
    cfg = load_tournament(data)
    assert cfg.protocols[0].rounds == 1 and cfg.protocols[1].rounds == 1
    assert cfg.questions.n == 3 and cfg.questions.seed == 0
    assert cfg.ray.num_cpus == 4


def test_parse_value_types() -> None:
    assert parse_value("3") == 3
    assert parse_value("true") is True
    assert parse_value("0.5") == 0.5
    assert parse_value("abc") == "abc"
    assert parse_value("3e-5") == 3e-5 and isinstance(parse_value("3e-5"), float)  # YAML 1.1 would keep a string
    assert parse_value("1_000") == 1000
    assert parse_value("[1, 2]") == [1, 2]


def test_type_error_names_field() -> None:
    data = _smoke()
    data["questions"]["n"] = "x"
    with pytest.raises(ConfigError) as err:
        load_tournament(data)
    msg = str(err.value)
    assert "questions.n" in msg and "int" in msg and "'x'" in msg


def test_bool_is_not_an_int() -> None:
    data = _smoke()
    data["samples"] = True
    with pytest.raises(ConfigError, match="samples"):
        load_tournament(data)


def test_int_accepted_for_float() -> None:
    data = _smoke()
    data["entries"][0]["temperature"] = 1
    cfg = load_tournament(data)
    assert cfg.entries[0].temperature == 1.0 and isinstance(cfg.entries[0].temperature, float)


def test_invalid_values_are_config_errors() -> None:
    data = _smoke()
    data["protocols"][0]["rounds"] = 0
    with pytest.raises(ConfigError, match="rounds"):
        load_tournament(data)
    data = _smoke()
    data["context_overflow"] = "explode"
    with pytest.raises(ConfigError, match="truncate"):
        load_tournament(data)
    data = _smoke()
    data["entries"][0]["temperature"] = -1
    with pytest.raises(ConfigError, match="temperature"):
        load_tournament(data)


def test_dump_then_load_is_equal() -> None:
    cfg = load_tournament(_smoke())
    again = load_tournament(read_yaml_text(dump(cfg)))
    assert again == cfg


def test_defaults_dump_round_trip() -> None:
    data = {"policies": [{"name": "judge"}], "protocols": [{"name": "blind"}]}
    cfg = load_tournament(data)
    assert load_tournament(read_yaml_text(dump(cfg))) == cfg


def test_named_items_as_mapping() -> None:
    data = _smoke()
    data["policies"] = {"smollm": {"num_cpus": 0.5}, "judge": None}
    cfg = load_tournament(data)
    assert [p.name for p in cfg.policies] == ["smollm", "judge"]
    assert cfg.policy("judge").num_cpus == 1.0


def read_yaml_text(text: str) -> dict:
    import yaml

    return yaml.safe_load(text)


def test_yaml_numbers_in_python_notation_are_read_as_numbers(tmp_path) -> None:
    from judges.presets import train_config

    path = tmp_path / "judge.yaml"
    path.write_text("name: x\nlr: 3e-5\ntrain_questions: 1_000\n")  # YAML 1.1 reads 3e-5 as a string
    cfg = train_config(str(path), None)
    assert cfg.lr == 3e-5 and cfg.train_questions == 1000


def test_unknown_prompt_style_refused_at_load_with_known_styles() -> None:
    data = _smoke()
    data["entries"][0]["prompt"] = "sarcastic"
    with pytest.raises(ConfigError) as err:
        load_tournament(data, "smoke")
    msg = str(err.value)
    assert "entries" in msg and ".prompt" in msg and "sarcastic" in msg
    assert "default" in msg and "assertive" in msg  # the known styles


def test_backend_choices_come_from_the_registry() -> None:
    from debate.backends.registry import BACKENDS

    data = _smoke()
    data["policies"][0]["backend"] = "tgi"
    with pytest.raises(ConfigError) as err:
        load_tournament(data)
    assert all(name in str(err.value) for name in BACKENDS) and "mock" in BACKENDS
    data["policies"][0]["backend"] = "mock"
    assert load_tournament(data).policies[0].backend == "mock"


@pytest.mark.parametrize("lookup,what", [
    ("arenas.presets:preset", "preset"),
    ("judges.presets:train_config", "judge preset"),
    ("arenas.rejudge:judge_spec", "judge spec"),
    ("debate.prompts:load_prompts", "prompt set"),
])
def test_named_yaml_lookups_list_the_known_names(lookup, what) -> None:
    import importlib

    module, func = lookup.split(":")
    f = getattr(importlib.import_module(module), func)
    with pytest.raises(ConfigError, match=f"unknown {what} 'nope'; known"):
        f(None, "nope") if func == "train_config" else f("nope")


def test_judge_spec_from_a_file_and_a_missing_file(tmp_path) -> None:
    from arenas.rejudge import judge_spec

    path = tmp_path / "j.yaml"
    path.write_text("policy: {name: jj, backend: mock}\njudge: {name: my-judge}\n")
    policy, judge = judge_spec(str(path))
    assert (policy.backend, judge.name, judge.policy) == ("mock", "my-judge", "jj")
    with pytest.raises(ConfigError, match="does not exist.*embedded"):
        judge_spec(str(tmp_path / "missing.yaml"))


def test_range_violation_names_the_field_and_the_bound() -> None:
    data = _smoke()
    data["entries"][1]["top_p"] = 1.5
    with pytest.raises(ConfigError) as err:
        load_tournament(data, "smoke")
    msg = str(err.value)
    assert msg.startswith("smoke: entries[1].top_p:") and "less than or equal to 1" in msg and "1.5" in msg


def test_choice_error_lists_the_known_values() -> None:
    data = _smoke()
    data["judge"]["mode"] = "vibes"
    with pytest.raises(ConfigError, match=r"judge\.mode: unknown value 'vibes'; known: 'logprob' or 'text'"):
        load_tournament(data)
    data = _smoke()
    data["quotes"]["mode"] = "none"
    with pytest.raises(ConfigError, match=r"quotes\.mode: unknown value 'none'; known: tags, tags\+recite"):
        load_tournament(data)


def test_named_items_errors_name_the_item() -> None:
    data = _smoke()
    data["policies"] = {"smollm": {"backend": "tgi"}, "judge": None}
    with pytest.raises(ConfigError, match=r"policies\[0\]\.backend: unknown value 'tgi'; known: transformers"):
        load_tournament(data)


def test_direct_construction_is_validated_too() -> None:
    from dataclasses import replace

    from debate.configs import PolicyConfig, ProtocolConfig

    with pytest.raises(ConfigError, match="PolicyConfig.backend: unknown value 'tgi'"):
        PolicyConfig(name="p", backend="tgi")
    with pytest.raises(ConfigError, match="ProtocolConfig.rounds: .*greater than or equal to 1"):
        ProtocolConfig("debate", rounds=0)
    with pytest.raises(ConfigError, match="EntryConfig: unknown field 'temprature'; known: name, policy"):
        EntryConfig("x", "p", temprature=0.5)
    with pytest.raises(ConfigError, match="PolicyConfig.threads"):
        replace(PolicyConfig("p"), threads=-1)
    with pytest.raises(ConfigError, match="entries: a debate tournament needs at least two entries"):
        TournamentConfig(policies=(PolicyConfig("judge"),), entries=(EntryConfig("x", "judge"),))


def test_bool_is_not_a_number_in_a_plain_dataclass_either() -> None:
    from judges.presets import train_config

    with pytest.raises(ConfigError, match="epochs: expected a number, got True"):
        train_config(None, None, ["epochs=true"])
    with pytest.raises(ConfigError, match="unknown field 'epoch'; known: name, base_model"):
        train_config(None, None, ["epoch=2"])


def test_every_training_preset_loads_and_the_gpu_one_uses_the_separate_learner() -> None:
    from debate.training.config import preset_names, train_config
    from debate.training.server import resolve_layout

    names = preset_names()
    assert {"cpu-smoke", "cpu-long", "gpu"} <= set(names)
    layouts = {name: resolve_layout(train_config(None, name)) for name in names}
    assert layouts["gpu"] == "separate" and layouts["cpu-smoke"] == layouts["cpu-long"] == "shared"


def test_an_unquoted_off_in_yaml_is_the_word_off(tmp_path) -> None:
    """YAML 1.1 reads `off` as false; the fields whose choices are words take it back."""
    from debate.training.config import train_config
    from judges.train import JudgeTrainConfig

    cfg = train_config(None, "cpu-smoke", ["generate_autocast=off", "share_prompts=off"])
    assert cfg.generate_autocast == "off" and cfg.share_prompts == "off"
    path = tmp_path / "t.yaml"
    path.write_text("name: t\nshare_prompts: on\ngenerate_autocast: off\n")
    cfg = train_config(str(path), None)
    assert cfg.share_prompts == "on" and cfg.generate_autocast == "off"
    with pytest.raises(ConfigError, match="generate_autocast"):
        train_config(None, "cpu-smoke", ["generate_autocast=on"])  # no such choice: refused, named
    assert JudgeTrainConfig(autocast=False).autocast == "off"
