import pytest
import torch

from smoothclap.config import LOSS_PRESETS, RunConfig, load_config, loss_preset
from smoothclap.model import ProjectionHead, SmoothClapConfig, SmoothClapModel


def test_save_load_roundtrip_exact(tmp_path):
    torch.manual_seed(0)
    m = SmoothClapModel(SmoothClapConfig(audio_tower="whisper-tiny-en", text_tower="minilm-l6",
                                         audio_dim=12, text_dim=10, embed_dim=16, trained_on=["x"]))
    m.fit_normalization((torch.randn(50, 12) * 3 + 1).numpy())
    with torch.no_grad():
        m.logit_scale.fill_(2.5)
    m.save_pretrained(tmp_path / "m")
    m2 = SmoothClapModel.from_pretrained(tmp_path / "m")
    for (k, a), (k2, b) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    x = torch.randn(3, 12)
    m.eval()
    assert torch.equal(m.encode_audio_features(x), m2.encode_audio_features(x))
    assert m2.config.trained_on == ["x"]


def test_from_pretrained_missing(tmp_path):
    from smoothclap.errors import BadInputError

    with pytest.raises(BadInputError, match="config.json"):
        SmoothClapModel.from_pretrained(tmp_path)


def test_head_structure_and_scale_clamp():
    h = ProjectionHead(5, 7, dropout=0.0)
    assert h.linear1.bias is None and h.linear2.bias is None
    x = torch.randn(4, 5)
    e1 = h.linear1(x)
    ref = torch.nn.functional.layer_norm(e1 + h.linear2(torch.nn.functional.gelu(e1)), (7,),
                                         h.layer_norm.weight, h.layer_norm.bias)
    torch.testing.assert_close(h(x), ref)
    m = SmoothClapModel(SmoothClapConfig(audio_tower="whisper-tiny-en", text_tower="minilm-l6",
                                         audio_dim=5, text_dim=5, embed_dim=8))
    assert abs(float(m.scale) - 1 / 0.07) < 1e-3
    with torch.no_grad():
        m.logit_scale.fill_(10.0)
    assert float(m.scale) == 100.0


def test_config_yaml_presets_and_errors(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("loss:\n  preset: paper-main\ntrain:\n  epochs: 3\n")
    cfg = load_config(p, ["loss.tau_a=0.2", "model.embed_dim=64"])
    assert cfg.loss.beta == LOSS_PRESETS["paper-main"]["beta"] and cfg.loss.gamma == 0.1
    assert cfg.loss.tau_a == 0.2 and cfg.train.epochs == 3 and cfg.model.embed_dim == 64
    # explicit values win over the preset
    assert loss_preset("smoothclap", beta=0.3).beta == 0.3
    assert loss_preset("clap").beta == 0.0
    cfg.dump(tmp_path / "dump.yaml")
    again = load_config(tmp_path / "dump.yaml")
    assert again == cfg
    p.write_text("train:\n  epohcs: 3\n")
    with pytest.raises(ValueError, match="epohcs.*did you mean 'epochs'"):
        load_config(p)
    p.write_text("train:\n  epochs: three\n")
    with pytest.raises(ValueError, match="train.epochs"):
        load_config(p)
    with pytest.raises(ValueError, match="unknown preset"):
        loss_preset("nope")
    assert isinstance(RunConfig().train.epochs, int)


def test_configuration_doc_is_generated_from_the_settings():
    """docs/configuration.md's tables come from the settings' own fields (each default stated once)."""
    from pathlib import Path

    from smoothclap.config import reference_markdown

    doc = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    assert reference_markdown() in doc


def test_typed_values_are_not_reparsed(tmp_path):
    """Flags reach the config as typed values: a path that reads as YAML stays a string."""
    cfg = load_config(None, ["train.epochs=3"], {"data.manifest": "yes", "out_dir": "123", "train.seed": 4})
    assert cfg.data.manifest == "yes" and cfg.out_dir == "123" and cfg.train.seed == 4 and cfg.train.epochs == 3
    assert cfg.updated({"train.seed": 5}).train.seed == 5 and cfg.train.seed == 4


def test_model_config_extends_the_model_section():
    """A saved model's config shares every default with the run config's ``model`` section."""
    from smoothclap.config import ConfigError, ModelConfig

    mc = SmoothClapConfig(audio_tower="whisper-tiny-en", text_tower="minilm-l6", audio_dim=4, text_dim=4)
    assert {k: getattr(mc, k) for k in ModelConfig.model_fields} == ModelConfig().to_dict()
    with pytest.raises(ConfigError, match="audio_tower: required"):
        SmoothClapConfig.from_dict({"text_tower": "minilm-l6", "audio_dim": 4, "text_dim": 4})


@pytest.mark.parametrize("name", ["demo", "paper", "recommended", "few-labels"])
def test_shipped_configs_load(name):
    """Every shipped config validates by name; the two recipes of the README's "When to use
    SmoothCLAP" differ only where the regime needs it."""
    from smoothclap.config import CONFIG_DIR

    assert (CONFIG_DIR / f"{name}.yaml").is_file()
    cfg = load_config(name)
    assert isinstance(cfg, RunConfig) and cfg.train.epochs >= 1
    if name == "few-labels":
        assert cfg.loss.preset == "smoothclap" and cfg.loss.local_source == "labels" and cfg.captions.emotion_word


def test_fallback_stats_pooled_or_the_average_group():
    """A clip scored without a group is z-scored with the stored statistics: ``pooled`` = all
    training clips (its std holds the between-group spread too), ``groups`` = the average group
    (mean of group means, root mean within-group variance), so that clip reaches the heads at the
    scale they trained at."""
    import numpy as np

    rng = np.random.default_rng(0)
    # two groups far apart (offset 10) with within-group std 1 and 3, of unequal size
    a = rng.standard_normal((40, 4)) * 1.0
    b = rng.standard_normal((160, 4)) * 3.0 + 10.0
    x = np.concatenate([a, b]).astype(np.float32)
    groups = np.array(["a"] * 40 + ["b"] * 160, dtype=object)
    fitted = {}
    for how in ("pooled", "groups", "shrunk"):
        m = SmoothClapModel(SmoothClapConfig(audio_tower="whisper-tiny-en", text_tower="minilm-l6", audio_dim=4,
                                             text_dim=4, embed_dim=8, feature_norm_group="corpus",
                                             fallback_stats=how))
        m.fit_normalization(x, groups)
        fitted[how] = (m.norm_mean.numpy().astype(np.float64), m.norm_std.numpy().astype(np.float64))
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(fitted["pooled"][0], x64.mean(0), rtol=1e-6)
    np.testing.assert_allclose(fitted["pooled"][1], x64.std(0), rtol=1e-6)
    means = np.stack([x64[:40].mean(0), x64[40:].mean(0)])
    var = np.stack([x64[:40].var(0), x64[40:].var(0)])
    np.testing.assert_allclose(fitted["groups"][0], means.mean(0), rtol=1e-6)
    np.testing.assert_allclose(fitted["groups"][1], np.sqrt(var.mean(0)), rtol=1e-6)
    # shrunk: the average group's mean; each feature scaled by sd_within * within / (within + between)
    between = means.var(0)
    np.testing.assert_allclose(fitted["shrunk"][0], means.mean(0), rtol=1e-6)
    np.testing.assert_allclose(fitted["shrunk"][1], (var.mean(0) + between) / np.sqrt(var.mean(0)), rtol=1e-6)
    # the pooled std is inflated by the offset between the groups; the average group's is not, and
    # the shrunk one damps a group-less clip more than the pooled one
    assert (fitted["pooled"][1] > fitted["groups"][1] + 1.0).all()
    assert (fitted["shrunk"][1] > fitted["pooled"][1]).all()
    # the choice travels with the saved model's config
    with pytest.raises(Exception, match="fallback_stats"):
        SmoothClapConfig(audio_tower="whisper-tiny-en", text_tower="minilm-l6", audio_dim=4, text_dim=4,
                         fallback_stats="median")
