"""The cached input path (data_path=cache) against the per-sample reference (data_path=files): stored token ids,
cached images, batched augmentation (same outputs given the same parameters, same parameter distributions), and a
short training run."""
import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as F
from PIL import Image
from scipy import stats
from torchvision.transforms.v2 import functional as F2

from lovt.data import ImageTextDataset, ReportAugmentationConfig, ReportTransform, ScanAugmentationConfig, ScanTransform
from lovt.data.batch_augment import AffineParams, BatchScanTransform, affine_nearest, draw_affine
from lovt.models import ReportTokenizer, load_tokenizer
from shared import augment2d

CACHE_SIZE = 256  # the sample JPEGs are 256 px: cached pixels equal decoded ones
MAX_LENGTH = 128


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """The sample MIMIC-CXR-JPG studies prepared, a tiny BERT on their sentences, image cache + stored tokens."""
    from lovt.data.mimic_cxr import create_dataset
    from lovt.data.prepare_cache import build_caches
    from lovt.data.tokenized import read_split_columns
    from lovt.models.report_encoder import build_tiny_bert
    from shared.sample_data import generate

    tmp = tmp_path_factory.mktemp("fast_data")
    generate(tmp / "sample", seed=0, only=["mimic-cxr-jpg"])
    path = create_dataset(tmp / "sample" / "mimic-cxr-jpg", "mimic-cxr_ap-pa", target_path=tmp / "prepared",
                          num_workers=0)
    sentences = read_split_columns(path, "train", ["sentences"])["sentences"]
    bert = build_tiny_bert(tmp / "bert", [s for report in sentences for s in report], vocab_size=300)
    tokenizer = load_tokenizer(str(bert))
    build_caches(path, CACHE_SIZE, tokenizer, MAX_LENGTH)
    return path, bert, tokenizer


# ------------------------------------------------------------------------------------------ tokens


def test_stored_token_ids_equal_per_sample_tokenisation(prepared):
    from lovt.data.tokenized import TokenizedReports, read_split_columns

    path, _, tokenizer = prepared
    collate = ReportTokenizer(tokenizer, MAX_LENGTH)
    checked = 0
    for split in ("train", "validation", "test"):
        cols = read_split_columns(path, split, ["study_id", "sentences"])
        stored = TokenizedReports(path, split, tokenizer, MAX_LENGTH, cols["study_id"])
        assert len(stored) == len(cols["sentences"])
        for i, sentences in enumerate(cols["sentences"]):
            ids = stored[i]
            expected = tokenizer(sentences, add_special_tokens=False, truncation=True,
                                 max_length=MAX_LENGTH - 2)["input_ids"] if sentences else []
            assert [t.tolist() for t in ids] == expected
            if sentences:  # the packed batch (ids, masks, sentence spans) equals tokenising the text
                ref, ours = collate([sentences]), collate.pack([ids])
                assert set(ref) == set(ours) and all(torch.equal(ref[k], ours[k]) for k in ref)
                spans = ours["sentence_token_mask"][0].sum(1)[: ours["num_sentences"][0]].tolist()
                assert spans == [len(t) for t in expected if len(t)]
            checked += 1
    assert checked > 50


def test_token_store_is_keyed_by_tokenizer_and_max_length(prepared, tmp_path):
    from lovt.data.tokenized import TokenizedReports, tokenized_key
    from lovt.models.report_encoder import build_tiny_bert

    path, _, tokenizer = prepared
    key = tokenized_key(tokenizer, MAX_LENGTH)
    tokenizer(["a b c " * 200], truncation=True, max_length=16)  # a call changes the backend's truncation state
    assert tokenized_key(tokenizer, MAX_LENGTH) == key
    assert tokenized_key(tokenizer, 512) != key
    other = load_tokenizer(str(build_tiny_bert(tmp_path / "other", ["another corpus entirely"], vocab_size=120)))
    other.name_or_path = tokenizer.name_or_path  # same folder name, other vocabulary: still another key
    assert tokenized_key(other, MAX_LENGTH) != key
    with pytest.raises(FileNotFoundError, match="prepare_cache.py"):
        TokenizedReports(path, "train", tokenizer, 512)
    with pytest.raises(FileNotFoundError, match="prepare_cache.py"):
        TokenizedReports(path, "train", other, MAX_LENGTH)
    with pytest.raises(ValueError, match="another version of the dataset"):
        TokenizedReports(path, "train", tokenizer, MAX_LENGTH, study_ids=["1", "2"])


# ------------------------------------------------------------------------------------------ cached dataset


def test_cached_items_equal_the_reference_items(prepared):
    from lovt.data.cached import CachedImageTextDataset
    from lovt.data.prepare_cache import open_image_cache

    path, _, tokenizer = prepared
    text = ReportAugmentationConfig(sentence_shuffling="random_swaps", sentence_sampling=None)
    ref = ImageTextDataset(path, "train", None, ReportTransform(text))
    ours = CachedImageTextDataset(path, "train", tokenizer, MAX_LENGTH, open_image_cache(path, CACHE_SIZE),
                                  ReportTransform(text), with_text=True)
    assert len(ours) == len(ref) and ours.num_missing == 0
    for i in range(len(ref)):
        torch.manual_seed(i)  # the same draws: the view, then the sentence swaps
        a = ref[i]
        torch.manual_seed(i)
        b = ours[i]
        assert (b["study_id"], b["patient_id"], b["view_index"]) == (a["study_id"], a["patient_id"], a["view_index"])
        assert torch.equal(b["chexpert"], a["chexpert"]) and b["sentences"] == a["sentences"]
        assert b["scan"].dtype == torch.uint8 and torch.equal(b["scan"].float() / 255, a["scan"])
        expected = tokenizer(a["sentences"], add_special_tokens=False)["input_ids"] if a["sentences"] else []
        assert [t.tolist() for t in b["sentence_ids"]] == expected


def test_missing_cache_names_the_command(prepared, tmp_path):
    from lovt.data.prepare_cache import open_image_cache

    path, _, _ = prepared
    with pytest.raises(FileNotFoundError, match="prepare_cache.py --path .* --size 128"):
        open_image_cache(path, 128)


# ------------------------------------------------------------------------------------------ batched augmentation


def _reference_draws(img: Image.Image, size: int, c: ScanAugmentationConfig) -> dict:
    """The parameters ScanTransform's pipeline draws from torch's global generator, in its order."""
    top, left, h, w = T.RandomResizedCrop.get_params(img, list(c.crop_scale_range), [3 / 4, 4 / 3])
    flip = bool(torch.rand(1) < c.horizontal_flip_prob)
    angle, (tx, ty), scale, _ = T.RandomAffine.get_params(list(c.rotation_angle_range), [0.1, 0.1],
                                                          list(c.scaling_range), None, [size, size])
    apply = not c.jitter_prob < torch.rand(1)
    order, b, k, _, _ = T.ColorJitter.get_params(c.brightness_jitter_ratio_range, c.contrast_jitter_ratio_range,
                                                 None, None)
    sigma = T.GaussianBlur.get_params(*c.gaussian_blur_sigma_range)
    order = [o for o in order.tolist() if o in (0, 1)] + [2, 3]
    return {"crop": torch.tensor([[top, left, h, w]]), "flip": torch.tensor([flip]),
            "affine": AffineParams(torch.tensor([angle], dtype=torch.float64), torch.tensor([[tx, ty]]),
                                   torch.tensor([scale], dtype=torch.float64)),
            "jitter": augment2d.ColorJitterParams(torch.tensor([apply]), torch.tensor([order]),
                                                  torch.tensor([[b, k, 1.0, 0.0]])),
            "blur": (torch.tensor([True]), torch.tensor([sigma]))}


def _functional_reference(x: torch.Tensor, p: dict, i: int, size: int, kernel: int) -> torch.Tensor:
    """One uint8 sample through torchvision's functional ops with the given parameters (the crop on uint8, as
    the batched CPU crop and the PIL pipeline round it to 8 bits; then float)."""
    top, left, h, w = p["crop"][i].tolist()
    y = F2.resized_crop(x, top, left, h, w, [size, size], antialias=True).float() / 255
    y = F.hflip(y) if p["flip"][i] else y
    a = p["affine"]
    y = F.affine(y, angle=float(a.angle[i]), translate=a.translate[i].tolist(), scale=float(a.scale[i]),
                 shear=[0.0, 0.0], interpolation=F.InterpolationMode.NEAREST, fill=[0.0])
    j = p["jitter"]
    if j.apply[i]:
        for op in j.order[i].tolist():
            if op == 0:
                y = F.adjust_brightness(y, float(j.factors[i, 0]))
            elif op == 1:
                y = F.adjust_contrast(y, float(j.factors[i, 1]))
    s = float(p["blur"][1][i])
    return F.gaussian_blur(y, [kernel, kernel], [s, s])


def test_affine_equals_torchvision_bit_for_bit():
    torch.manual_seed(0)
    x = torch.rand(8, 1, 40, 52)
    p = draw_affine(8, (40, 52))
    ref = torch.stack([F.affine(x[i], angle=float(p.angle[i]), translate=p.translate[i].tolist(),
                                scale=float(p.scale[i]), shear=[0.0, 0.0],
                                interpolation=F.InterpolationMode.NEAREST, fill=[0.0]) for i in range(8)])
    assert torch.equal(affine_nearest(x, p), ref)


@pytest.mark.parametrize("opencv_blur", [True, False])  # loader workers / the conv blur used on GPUs
def test_batched_pipeline_equals_per_sample_ops_given_the_same_parameters(opencv_blur):
    size, stats_ = 48, {"pixel_mean": 0.4, "pixel_std": 0.2}
    batch = BatchScanTransform(image_size=(size, size), dataset_stats=stats_, opencv_blur=opencv_blur,
                               generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(0)
    scans = [torch.randint(0, 256, (1, h, w), dtype=torch.uint8, generator=g) for h, w in
             [(60, 70), (64, 64), (80, 57), (50, 90), (61, 61), (70, 50)]]
    images, sizes = augment2d.stack_padded(scans)
    params = batch.draw(sizes)
    out = batch.apply(images, sizes, params)
    assert out.shape == (6, 3, size, size)
    for i, scan in enumerate(scans):
        ref = (_functional_reference(scan, params, i, size, batch.kernel) - 0.4) / 0.2
        assert torch.allclose(out[i], ref.expand(3, -1, -1), atol=1e-5)
    # validation: pad to square (one pixel short when odd), resize, normalise
    val = BatchScanTransform(image_size=(size, size), dataset_stats=stats_, val=True)(images, sizes)
    for i, scan in enumerate(scans):
        ref = ScanTransform(image_size=(size, size), dataset_stats=stats_, val=True)(F.to_pil_image(scan))
        assert (val[i] - ref).abs().mean() * 0.2 < 1 / 255  # uint8 PIL resize vs float resize: rounding only


def test_batched_pipeline_reproduces_scan_transform_given_its_own_draws(prepared):
    """ScanTransform on PIL images vs the batched path fed the parameters ScanTransform itself drew."""
    path, _, _ = prepared
    ds = ImageTextDataset(path, "train", view_selection="first")
    size, c = 64, ScanAugmentationConfig()
    reference, batch = ScanTransform(c, (size, size)), BatchScanTransform(c, (size, size))
    diffs = []
    for i in range(12):
        img = F.to_pil_image(ds[i]["scan"])
        torch.manual_seed(i)
        expected = reference(img)
        torch.manual_seed(i)
        params = _reference_draws(img, size, c)
        x = torch.from_numpy(np.array(img))[None, None]
        diffs.append((batch.apply(x, torch.tensor([x.shape[-2:]]), params)[0] - expected).abs() * reference.pixel_std)
    d = torch.stack(diffs)
    # PIL rounds to 8 bits after every step, the batched path only after the crop: about one grey level apart
    assert d.mean() < 2 / 255 and d.flatten().quantile(0.99) < 4 / 255


def test_parameter_distributions_match_the_reference():
    """Many draws of the batched sampler vs the reference transforms' own get_params (two-sample tests)."""
    n, size, hw = 3000, 64, (90, 75)
    c = ScanAugmentationConfig()
    img = Image.new("L", hw[::-1])
    torch.manual_seed(0)
    ref = [_reference_draws(img, size, c) for _ in range(n)]
    batch = BatchScanTransform(c, (size, size), generator=torch.Generator().manual_seed(0))
    ours = batch.draw(torch.tensor([hw] * n))
    again = BatchScanTransform(c, (size, size), generator=torch.Generator().manual_seed(0)).draw(torch.tensor([hw] * n))
    assert torch.equal(ours["crop"], again["crop"]) and torch.equal(ours["blur"][1], again["blur"][1])

    def cat(key, f):
        return np.array([f(r[key]) for r in ref], dtype=float)

    crop = ours["crop"].double()
    samples = {
        "area": (cat("crop", lambda b: float(b[0, 2] * b[0, 3])), (crop[:, 2] * crop[:, 3]).numpy()),
        "aspect": (cat("crop", lambda b: float(b[0, 3] / b[0, 2])), (crop[:, 3] / crop[:, 2]).numpy()),
        "top": (cat("crop", lambda b: float(b[0, 0])), crop[:, 0].numpy()),
        "left": (cat("crop", lambda b: float(b[0, 1])), crop[:, 1].numpy()),
        "angle": (cat("affine", lambda a: float(a.angle[0])), ours["affine"].angle.numpy()),
        "tx": (cat("affine", lambda a: float(a.translate[0, 0])), ours["affine"].translate[:, 0].double().numpy()),
        "ty": (cat("affine", lambda a: float(a.translate[0, 1])), ours["affine"].translate[:, 1].double().numpy()),
        "scale": (cat("affine", lambda a: float(a.scale[0])), ours["affine"].scale.numpy()),
        "brightness": (cat("jitter", lambda j: float(j.factors[0, 0])), ours["jitter"].factors[:, 0].double().numpy()),
        "contrast": (cat("jitter", lambda j: float(j.factors[0, 1])), ours["jitter"].factors[:, 1].double().numpy()),
        "sigma": (cat("blur", lambda b: float(b[1][0])), ours["blur"][1].double().numpy()),
    }
    for name, (a, b) in samples.items():
        assert stats.ks_2samp(a, b).pvalue > 1e-3, name
        assert abs(a.mean() - b.mean()) < 4 * np.sqrt(a.var() / n + b.var() / n) + 1e-9, name

    def brightness_first(order):
        return (order == 0).nonzero()[:, -1] < (order == 1).nonzero()[:, -1]

    proportions = {
        "flip": (cat("flip", float), ours["flip"].double().numpy()),
        "brightness first": (np.array([float(brightness_first(r["jitter"].order)[0]) for r in ref]),
                             brightness_first(ours["jitter"].order).double().numpy()),
        "jitter applied": (cat("jitter", lambda j: float(j.apply[0])), ours["jitter"].apply.double().numpy()),
    }
    for name, (a, b) in proportions.items():
        pooled = (a.mean() + b.mean()) / 2
        assert abs(a.mean() - b.mean()) <= 4 * np.sqrt(2 * pooled * (1 - pooled) / n) + 1e-9, name


# ------------------------------------------------------------------------------------------ training


def _train(prepared, tmp_path, name, overrides):
    import pandas as pd
    from hydra import compose, initialize_config_dir

    import lovt.train as train
    from lovt.synthetic import tiny_overrides

    path, bert, _ = prepared
    with initialize_config_dir(config_dir=train.CONFIG_DIR, version_base="1.3"):
        cfg = compose("train_representation", overrides=[
            "+experiment=LoVT_100", f"name={name}", "export_run=false", "attention_plots=0", "seed=0",
            "pretrain_model.max_epochs=2", "pretrain_model.learning_rate=1e-3", "trainer.log_every_n_steps=1",
            "pretrain_dataset=mimic-cxr_sample", f"dataset_path={path}", f"cache_size={CACHE_SIZE}"]
            + tiny_overrides(bert, arch="resnet18", batch_size=8)
            + [f"pretrain_model.encoder_b.max_length={MAX_LENGTH}"] + overrides)
    result = train.run_training(cfg, tmp_path / name)
    steps = pd.read_csv(tmp_path / name / "metrics.csv")["train/total_loss_step"].dropna().to_numpy()
    return result, steps


def _validation_loss(module, datamodule) -> float:
    torch.manual_seed(0)  # the same view draws on both paths
    module.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for batch in datamodule.val_dataloader():
            total += float(module.model(batch)[0]) * len(batch["study_id"])
            n += len(batch["study_id"])
    return total / n


def test_training_from_the_cache_matches_the_reference_path(prepared, tmp_path):
    """Files path vs cache + stored tokens + augmentation on the training device (here the CPU), same seed."""
    from lovt.fast_data import FastPretrainDataModule

    reference, ref_steps = _train(prepared, tmp_path, "files", ["data_path=files"])
    cached, steps = _train(prepared, tmp_path, "cache", ["data_path=cache", "augment_on=device"])
    assert len(steps) == len(ref_steps) == 10 and np.isfinite(steps).all()
    # the per-step losses differ by their augmentation draws only: their means agree within the step noise
    noise = np.sqrt(steps.var(ddof=1) / len(steps) + ref_steps.var(ddof=1) / len(ref_steps))
    assert abs(steps.mean() - ref_steps.mean()) < 4 * noise
    # one trained model, its validation loss through either input path: the same up to 8-bit rounding
    path, _, tokenizer = prepared
    module, config = cached["module"], cached["module"].config
    files = FastPretrainDataModule("mimic-cxr_sample", config, dataset_path=str(path), tokenizer=tokenizer)
    cache = FastPretrainDataModule("mimic-cxr_sample", config, dataset_path=str(path), tokenizer=tokenizer,
                                   data_path="cache", augment_on="workers", cache_size=CACHE_SIZE)
    files.setup("fit")
    cache.setup("fit")
    a, b = _validation_loss(module, files), _validation_loss(module, cache)
    assert abs(a - b) < 0.01 * abs(a), (a, b)
    assert reference["best_score"] is not None


def test_cache_path_needs_a_prepared_folder_and_valid_keys(prepared):
    from types import SimpleNamespace

    from lovt.fast_data import FastPretrainDataModule

    config = SimpleNamespace(encoder_b=SimpleNamespace(max_length=MAX_LENGTH))
    with pytest.raises(ValueError, match="data_path"):
        FastPretrainDataModule({}, config, tokenizer=prepared[2], data_path="memory")
    with pytest.raises(ValueError, match="augment_on=device needs data_path=cache"):
        FastPretrainDataModule({}, config, tokenizer=prepared[2], augment_on="device")
    with pytest.raises(ValueError, match="prepared dataset folder"):
        FastPretrainDataModule({"train": [], "validation": []}, config, tokenizer=prepared[2],
                               data_path="cache").setup("fit")


def test_bench_feed_measurement_runs_on_cpu(prepared):
    """The GPU benchmark's training feed (bf16 autocast, channels-last, augmentation on the device), on the CPU."""
    from hydra import compose, initialize_config_dir

    import lovt.train as train
    from lovt.bench_loader import feed_records
    from lovt.models import BiModalModel, model_config
    from lovt.synthetic import tiny_overrides

    path, bert, tokenizer = prepared
    with initialize_config_dir(config_dir=train.CONFIG_DIR, version_base="1.3"):
        cfg = compose("train_representation", overrides=["+experiment=LoVT_100"] + tiny_overrides(bert, arch="resnet18")
                      + [f"pretrain_model.encoder_b.max_length={MAX_LENGTH}"])
    records = feed_records(BiModalModel(model_config(cfg.pretrain_model)), path, tokenizer, 64, 4, CACHE_SIZE, 0, 2,
                           torch.device("cpu"), "cpu", "sample", max_length=MAX_LENGTH)
    values = {r["name"]: r["value"] for r in records}
    assert set(values) == {f"{k}_{p}" for k in ("train_images_per_s", "data_wait_share")
                           for p in ("files", "cache_device_aug")}
    assert all(v > 0 for k, v in values.items() if k.startswith("train"))
    assert all(0 <= v <= 100 for k, v in values.items() if k.startswith("data_wait"))


def test_device_augmentation_draws_resume_from_the_datamodule_state(prepared):
    from hydra import compose, initialize_config_dir

    import lovt.train as train
    from lovt.fast_data import FastPretrainDataModule
    from lovt.models import model_config
    from lovt.synthetic import tiny_overrides

    path, bert, tokenizer = prepared
    with initialize_config_dir(config_dir=train.CONFIG_DIR, version_base="1.3"):
        cfg = compose("train_representation", overrides=["+experiment=LoVT_100"] + tiny_overrides(bert))
    config = model_config(cfg.pretrain_model)

    def datamodule():
        dm = FastPretrainDataModule("mimic-cxr_sample", config, dataset_path=str(path), tokenizer=tokenizer,
                                    data_path="cache", augment_on="device", cache_size=CACHE_SIZE)
        dm.setup("fit")
        return dm

    first = datamodule()
    batch = next(iter(first.train_dataloader()))
    assert batch["scan_uint8"].dtype == torch.uint8 and "scan" not in batch  # augmented after the transfer
    state = first.state_dict()
    a = first.on_after_batch_transfer(dict(batch))["scan"]
    assert a.shape == (4, 3, 64, 64) and not torch.equal(a, first.on_after_batch_transfer(dict(batch))["scan"])
    resumed = datamodule()
    resumed.load_state_dict(state)
    assert torch.equal(resumed.on_after_batch_transfer(dict(batch))["scan"], a)
