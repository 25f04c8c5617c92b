import re
from pathlib import Path

import pytest
import yaml

from tunewise.config import load_config, validate_config
from tunewise.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted(p for d in ("configs", "examples") for p in (ROOT / d).rglob("*.yaml"))


def test_there_are_shipped_configs():
    assert any("tweet-sentiment" in str(p) for p in SHIPPED)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_config_validates_and_names_its_command(path: Path):
    config = load_config(path)
    first_line = path.read_text(encoding="utf-8").splitlines()[0]
    assert first_line.startswith("# Run: tunewise ") and str(path.relative_to(ROOT)) in first_line
    assert config.data.train.is_absolute() or config.data.train.parent == path.parent / "data"


def _minimal(**data) -> dict:
    return {"data": {"train": "train.jsonl", **data}}


def test_unknown_key_is_named_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"unknown key 'train.lrr' \(did you mean 'train.lr'\?\)"):
        validate_config({**_minimal(), "train": {"lrr": 1e-4}})


def test_unknown_section_is_named():
    with pytest.raises(ConfigError, match="unknown key 'trian'"):
        validate_config({**_minimal(), "trian": {}})


def test_wrong_type_names_key_and_value():
    with pytest.raises(ConfigError, match=r"'train.batch_size'.*'lots'"):
        validate_config({**_minimal(), "train": {"batch_size": "lots"}})


def test_dotted_overrides_are_typed_and_checked(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(_minimal()), encoding="utf-8")
    config = load_config(path, ["train.lr=1e-4", "lora.r=4", "data.labels=[a, b]", "prompt.chat_template=false"])
    assert config.train.lr == 1e-4 and config.lora.r == 4
    assert config.data.labels == ["a", "b"] and config.prompt.chat_template is False
    assert config.data.train == tmp_path / "train.jsonl"  # resolved against the config's folder
    with pytest.raises(ConfigError, match="unknown key 'lora.rank'"):
        load_config(path, ["lora.rank=4"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(path, ["lora.r"])


def test_missing_file_and_bad_yaml_are_one_line_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  train: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: invalid YAML"):
        load_config(bad)


def test_metric_name_gets_eval_prefix():
    assert validate_config({**_minimal(), "train": {"metric": "loss"}}).train.metric == "eval_loss"


def test_metric_not_computed_during_training_is_refused_at_load():
    with pytest.raises(ConfigError, match="train.metric 'eval_rouge' is not computed during training"):
        validate_config({**_minimal(), "train": {"metric": "rouge"}})


def test_curate_steps_are_typed_and_unknown_keys_named():
    config = validate_config({**_minimal(), "curate": {"steps": [{"step": "near_dedup", "threshold": 0.7}]}})
    assert config.curate.steps[0].threshold == 0.7 and config.curate.steps[0].num_perm == 128
    typo = r"unknown key 'curate.steps\[1\] \(near_dedup\).threshhold' \(did you mean '.*\.threshold'\?\)"
    with pytest.raises(ConfigError, match=typo):
        validate_config({**_minimal(), "curate": {"steps": [{"step": "near_dedup", "threshhold": 0.7}]}})
    with pytest.raises(ConfigError, match=r"'curate.steps\[1\]': unknown step 'dedupe'.*steps: validate, normalize"):
        validate_config({**_minimal(), "curate": {"steps": [{"step": "dedupe"}]}})
    with pytest.raises(ConfigError, match=r"'curate.steps\[1\] \(confidence\).min': Input should be less"):
        validate_config({**_minimal(), "curate": {"steps": [{"step": "confidence", "min": 2}]}})


def test_curate_output_resolves_against_the_config_file(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**_minimal(), "curate": {"output": "out", "steps": []}}), encoding="utf-8")
    assert load_config(path).curate.output == tmp_path / "out"


def test_prompt_variants_are_validated_with_the_variant_named():
    config = validate_config({**_minimal(), "prompt": {"system": "S", "variants": {"few": {"few_shot": 3}}}})
    variant = config.prompt.variant("few")
    assert variant.few_shot == 3 and variant.system == "S"  # inherits what it does not change
    with pytest.raises(ConfigError, match=r"prompt.variants.terse: tmplate: Extra inputs are not permitted"):
        validate_config({**_minimal(), "prompt": {"variants": {"terse": {"tmplate": "{{ text }}"}}}})


def test_task_metric_must_belong_to_the_evaluation_task():
    assert validate_config({**_minimal(), "train": {"metric": "macro_f1"}}).train.metric == "eval_macro_f1"
    with pytest.raises(ConfigError, match="train.metric 'rougeL' is not a metric of the classification task"):
        validate_config({**_minimal(), "train": {"metric": "rougeL"}})
    summarization = {"data": {"train": "t.jsonl", "kind": "completion"}, "eval": {"task": "summarization"}}
    assert validate_config({**summarization, "train": {"metric": "rougeL"}}).train.metric == "eval_rougeL"


def test_a_dumped_config_loads_from_another_folder(tmp_path: Path, monkeypatch):
    from tunewise.config import dump_config, load_config

    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "data" / "train.jsonl").write_text('{"text": "a", "label": "x"}\n')
    (project / "config.yaml").write_text("data:\n  train: data/train.jsonl\n")
    monkeypatch.chdir(tmp_path)
    config = load_config(Path("project/config.yaml"))
    copy = tmp_path / "runs" / "run-1" / "config.yaml"
    copy.parent.mkdir(parents=True)
    copy.write_text(dump_config(config))
    assert load_config(copy).data.train.resolve() == (project / "data" / "train.jsonl").resolve()
    assert load_config(copy).data.train.is_file()


def _cfg_file(tmp_path: Path, **sections) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({**_minimal(), **sections}), encoding="utf-8")
    return path


def test_an_error_an_override_brings_names_the_override_not_the_file(tmp_path: Path):
    path = _cfg_file(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_config(path, ["lora.r=4", "train.epochs=abc"])
    assert str(caught.value).startswith("override 'train.epochs=abc': 'train.epochs': Input should be a valid number")
    assert str(path) not in str(caught.value)
    unknown = r"^override 'train.lrr=1e-4': unknown key 'train.lrr' \(did you mean 'train.lr'\?\)$"
    with pytest.raises(ConfigError, match=unknown):
        load_config(path, ["train.lrr=1e-4"])
    # a problem across sections is the override's too when the file alone is fine
    with pytest.raises(ConfigError, match=r"^override 'train.metric=rougeL': train.metric 'rougeL' is not a metric"):
        load_config(path, ["train.metric=rougeL"])


def test_an_error_in_the_file_names_the_file_whatever_the_overrides(tmp_path: Path):
    path = _cfg_file(tmp_path, train={"epochs": "abc"})
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: 'train.epochs': .*'abc'"):
        load_config(path, ["lora.r=4"])
    with pytest.raises(ConfigError, match=r"^override 'train.epochs=xyz': 'train.epochs': .*'xyz'\)$"):
        load_config(path, ["train.epochs=xyz"])  # replaced by another bad value: the override's
    assert load_config(path, ["train.epochs=2"]).train.epochs == 2  # an override can fix the file
    with pytest.raises(ConfigError) as caught:
        load_config(path, ["lora.r=0"])
    problems = sorted(str(caught.value).split("; "))  # each names its own origin
    assert problems[0].startswith(f"{path}: 'train.epochs': ") and problems[1].startswith("override 'lora.r=0': ")


def test_the_cli_names_the_override(tmp_path: Path):
    from typer.testing import CliRunner

    from tunewise.cli import app

    result = CliRunner().invoke(app, ["run", str(_cfg_file(tmp_path)), "train.epochs=abc"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "error: override 'train.epochs=abc': 'train.epochs'" in " ".join(result.output.split())


def test_a_curation_step_is_named_with_its_position_from_one(tmp_path: Path):
    steps = [{"step": s} for s in ("validate", "normalize", "exact_dedup", "quality")]
    steps.append({"step": "near_dedup", "threshold": 3})
    with pytest.raises(ConfigError, match=r"^config: 'curate.steps\[5\] \(near_dedup\).threshold': Input should"):
        validate_config({**_minimal(), "curate": {"steps": steps}})
    override = "curate.steps=[{step: validate}, {step: quality, min_words: -1}]"
    with pytest.raises(ConfigError, match=r"^override .*: 'curate.steps\[2\] \(quality\).min_words': Input"):
        load_config(_cfg_file(tmp_path), [override])


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ({"threshold": 0.9}, r"'curate.steps\[2\]': no 'step' key saying which step this is; steps: validate, "),
        ("near_dedup", r"'curate.steps\[2\]': a step is a mapping like \{step: near_dedup\}, not 'near_dedup'; steps"),
        ({"step": "near_dupes"}, r"unknown step 'near_dupes' \(did you mean 'near_dedup'\?\); steps: .*decontaminate$"),
    ],
    ids=["missing", "not-a-mapping", "unknown"],
)
def test_a_step_that_names_no_known_step_lists_the_steps(step, message: str):
    with pytest.raises(ConfigError, match=message):
        validate_config({**_minimal(), "curate": {"steps": [{"step": "validate"}, step]}})


def test_items_of_other_lists_count_from_one_too():
    with pytest.raises(ConfigError, match=r"'data.labels\[2\]': Input should be a valid string"):
        validate_config({"data": {"train": "t.jsonl", "labels": ["a", ["b"]]}})


def test_sampler_is_one_of_the_known_orders():
    assert validate_config(_minimal()).train.sampler == "random"
    assert validate_config({**_minimal(), "train": {"sampler": "stratified"}}).train.sampler == "stratified"
    with pytest.raises(ConfigError, match=r"'train.sampler': Input should be 'random', 'stratified' or 'length_gr"):
        validate_config({**_minimal(), "train": {"sampler": "shuffled"}})


def test_calibration_needs_likelihood_classification():
    assert validate_config({**_minimal(), "eval": {"calibrate": True}}).eval.calibrate is True
    with pytest.raises(ConfigError, match="eval.calibrate: true .* eval.label_mode: generate does not give"):
        validate_config({**_minimal(), "eval": {"calibrate": True, "label_mode": "generate"}})
    with pytest.raises(ConfigError, match="eval.calibrate: true is for classification.* the summarization task"):
        validate_config({**_minimal(), "eval": {"calibrate": True, "task": "summarization"}})
    completion = {"data": {"train": "t.jsonl", "kind": "completion"}, "eval": {"calibrate": True}}
    with pytest.raises(ConfigError, match="evaluates the generation task; set eval.calibrate: false"):
        validate_config(completion)


def test_calibration_is_evaluated_on_the_test_split():
    assert validate_config({**_minimal(), "eval": {"calibrate": True, "split": "test"}}).eval.split == "test"
    assert validate_config({**_minimal(), "eval": {"split": "val"}}).eval.split == "val"
    with pytest.raises(
        ConfigError, match=r"^config: eval.calibrate: true fits .* validation split.* set eval.split: test$"
    ):
        validate_config({**_minimal(), "eval": {"calibrate": True, "split": "val"}})


def test_stratified_batches_need_classification_data(tmp_path: Path):
    assert validate_config({**_minimal(), "train": {"sampler": "stratified"}}).train.sampler == "stratified"
    completion = {"data": {"train": "t.jsonl", "kind": "completion"}, "train": {"sampler": "stratified"}}
    with pytest.raises(
        ConfigError,
        match=r"^config: train.sampler: stratified batches need class labels, and "
        r"data.kind: completion records have none; set train.sampler: random$",
    ):
        validate_config(completion)
    path = _cfg_file(tmp_path, data={"train": "t.jsonl", "kind": "chat"})
    with pytest.raises(ConfigError, match=r"^override 'train.sampler=stratified': train.sampler: stratified batches"):
        load_config(path, ["train.sampler=stratified"])
