# Copyright (c) monai_xreal contributors. Licensed under the Apache License, Version 2.0.
"""A synthetic-data utility study: the classifier bundle trained under each protocol and seed through MONAI's bundle
workflow, tested on a held-out real set, reported with bootstrap confidence intervals.

Each run (one protocol, one seed) is a folder of the work directory, ``<protocol>/seed_<k>/``::

    datalist.json   its training images ("training", tagged real / synthetic) and the test images ("test")
    spec.json       what makes the run (protocol, seed, epochs, labels, overrides, digests of both image lists)
    checkpoint*.pt  the bundle's resumable checkpoints (train.json's CheckpointSaver)
    model.pt        the network after the last epoch (utility.json's final saver): a fine-tuning run starts from
                    the synthetic run's
    result.json     the test set's probabilities, written last: a run with it is finished

The run is ``configs/common.json`` + ``configs/train.json`` + ``configs/utility.json`` of the classifier bundle (plus
``multi_gpu_train.json`` under ``torchrun``), run by ``monai.bundle.ConfigWorkflow`` with the run's folder as
``output_dir``; the test set is predicted by ``utility.json``'s ``test#evaluator``. Finished runs are skipped when
the study is run again with the same settings; an interrupted run resumes from its last checkpoint (the bundle's own
resume), and a work directory holding runs made with other settings is refused.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import monai
import numpy as np
import torch
from tqdm.auto import tqdm

from monai_xreal.bundle import bundle_config_files, default_bundle_path, read_bundle_config
from monai_xreal.errors import XRealInputError
from monai_xreal.io.atomic import write_text_atomically
from monai_xreal.io.hashing import sha256_file
from monai_xreal.utility.datalists import (
    TEST_KEYS,
    check_held_out,
    check_test_set,
    read_labelled_datalist,
    study_classes,
)
from monai_xreal.utility.protocols import PROTOCOL_KINDS, Protocol, build_protocols
from monai_xreal.utility.runs import RUN_SCHEMA, UtilityRun, predict, spec_digest
from monai_xreal.utility.stats import bootstrap_auc

__all__ = ["MULTI_GPU_CONFIG", "SCHEMA", "TRAIN_CONFIGS", "UtilityStudy"]

SCHEMA = "monai_xreal.utility/1"
# layered over configs/common.json, in order, for every run
TRAIN_CONFIGS = ("configs/train.json", "configs/utility.json")
# merged last under torchrun: the bundle's own, else the generator bundle's (it wraps whatever network_def defines)
MULTI_GPU_CONFIG = "configs/multi_gpu_train.json"
# config ids the study sets for each run; --override may not
STUDY_IDS = frozenset(
    {"bundle_root", "output_dir", "datalist", "dataset_dir", "epochs", "max_epochs", "seed", "classes", "num_classes",
     "initial_weights", "resume", "resume_checkpoint"}
)  # fmt: skip


class UtilityStudy:
    """The protocols, seeds and sets of a utility study, checked and planned; :meth:`run` trains, tests, reports.

    Args:
        real: datalist of the real training images (``image`` and ``labels`` per item).
        synthetic: datalist of the synthetic training images.
        test: datalist of the held-out real test images.
        work_dir: where the runs' folders go (created; a rerun skips the runs finished there).
        protocols: kinds among :data:`~monai_xreal.utility.protocols.PROTOCOL_KINDS`.
        ratios: synthetic images per real image of the ``mixed`` protocol, one protocol each.
        epochs: training epochs of each run (a fine-tuning run: of the fine-tuning); ``None``: the bundle's.
        seeds: runs per protocol (seeds ``0 .. seeds - 1``).
        bundle: the classifier bundle (default: the embedded ``cxr_classifier``).
        labels: the findings to study (every set must have them); ``None``: all, the same in every set.
        labels_from_prompt: read the synthetic items' labels from their ``prompt`` when they have no ``labels``.
        real_key, synthetic_key: the datalists' list to read.
        test_key: the test datalist's list; ``None``: the first of ``test``, ``validation``, ``training``.
        overrides: bundle config ids to set in every run (``{"batch_size": 8, "network_def#init_features": 16}``).
        finetune_learning_rate: the fine-tuning runs' ``learning_rate`` (default: the bundle's).
        device: the runs' torch device (default: the bundle's: the first GPU, else the CPU).
        bootstrap_samples: bootstrap replicates; confidence: the intervals' coverage; bootstrap_seed: their seed.
        verbose: the bundle's logging (per-iteration losses on stdout) instead of a quiet run.

    Raises:
        XRealInputError: bad options, datalists, labels or test set (see :mod:`monai_xreal.utility.datalists`), a
            synthetic set too small for a ratio, or a work directory holding runs made with other settings.
    """

    def __init__(
        self,
        real: str | Path,
        synthetic: str | Path,
        test: str | Path,
        work_dir: str | Path,
        *,
        protocols: Sequence[str] = PROTOCOL_KINDS,
        ratios: Sequence[float] = (0.5, 1.0, 2.0),
        epochs: int | None = None,
        seeds: int = 3,
        bundle: str | Path | None = None,
        labels: Sequence[str] | None = None,
        labels_from_prompt: bool = False,
        real_key: str | None = "training",
        synthetic_key: str | None = "training",
        test_key: str | None = None,
        overrides: Mapping[str, Any] | None = None,
        finetune_learning_rate: float | None = None,
        device: str | None = None,
        bootstrap_samples: int = 1000,
        confidence: float = 0.95,
        bootstrap_seed: int = 0,
        verbose: bool = False,
    ) -> None:
        for name, value in (("--seeds", seeds), ("--epochs", epochs), ("--bootstrap", bootstrap_samples)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise XRealInputError(name, f"must be a positive integer, got {value!r}")
        if not 0.0 < confidence < 1.0:
            raise XRealInputError("--confidence", f"must lie in (0, 1), got {confidence}")
        if finetune_learning_rate is not None and not finetune_learning_rate >= 0:
            raise XRealInputError("--finetune-lr", f"must be a non-negative number, got {finetune_learning_rate}")
        self.overrides = dict(overrides or {})
        self.spec_overrides = json.loads(json.dumps(self.overrides, default=str))  # as the JSON files hold them
        taken = sorted(k for k in self.overrides if k.split("#")[0] in STUDY_IDS)
        if taken:
            raise XRealInputError("--override", f"{taken} are set by the study for each run (use --epochs, --labels)")
        self.world_size, self.rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
        if device is not None and self.world_size > 1:
            raise XRealInputError("--device", "under torchrun each process uses the GPU of its LOCAL_RANK")
        self.device, self.verbose = None if device is None else str(device), verbose
        self.bundle = Path(bundle) if bundle is not None else default_bundle_path("cxr_classifier")
        names = list(TRAIN_CONFIGS)
        self.config_files = bundle_config_files(self.bundle, names)
        if self.world_size > 1:
            own = self.bundle / MULTI_GPU_CONFIG
            self.config_files.append(own if own.is_file() else default_bundle_path("cxr_xreal") / MULTI_GPU_CONFIG)
        self.meta_file = self.bundle / "configs" / "metadata.json"
        bundle_epochs = read_bundle_config(self.bundle, names).get("epochs")
        self.epochs = int(epochs if epochs is not None else bundle_epochs)
        self.seeds, self.finetune_learning_rate = seeds, finetune_learning_rate
        self.bootstrap = {"samples": bootstrap_samples, "confidence": confidence, "seed": bootstrap_seed,
                          "method": "percentile; seeds and test images drawn with replacement"}  # fmt: skip

        self.protocols = build_protocols(protocols, ratios)
        self.real = read_labelled_datalist(real, "--real", real_key)
        prompt_classes = (labels or self.real.label_names) if labels_from_prompt else None
        self.synthetic = read_labelled_datalist(synthetic, "--synthetic", synthetic_key, prompt_classes=prompt_classes)
        self.test = read_labelled_datalist(test, "--test", test_key, TEST_KEYS)
        self.classes = study_classes([self.real, self.synthetic, self.test], labels)
        check_held_out(self.test, self.real, self.synthetic)
        self.test_counts = check_test_set(self.test, self.classes)
        self.work_dir = Path(work_dir)
        if self.work_dir.exists() and not self.work_dir.is_dir():
            raise XRealInputError("--work-dir", f"{self.work_dir} is a file")
        self.runs = self._plan()
        self._check_work_dir()

    # -- planning ------------------------------------------------------------------------------------------------

    def _items(self, items: Sequence[dict]) -> list[dict]:
        return [{**item, "labels": {c: int(item["labels"].get(c, 0)) for c in self.classes}} for item in items]

    def _plan(self) -> list[UtilityRun]:
        """Every run, seed by seed, the synthetic run before the fine-tuning run it pre-trains."""
        wanted = list(self.protocols)
        if any(p.kind == "finetune" for p in wanted) and not any(p.kind == "synthetic" for p in wanted):
            at = next(i for i, p in enumerate(wanted) if p.kind == "finetune")
            wanted.insert(at, Protocol("synthetic", "synthetic"))  # pre-training only, not reported
        real, synthetic = self._items(self.real.items), self._items(self.synthetic.items)
        self.test_items = test = self._items(self.test.items)
        common = {"schema": RUN_SCHEMA, "epochs": self.epochs, "classes": self.classes, "test": spec_digest(test),
                  "bundle": str(self.bundle.resolve()), "configs": list(TRAIN_CONFIGS),
                  "overrides": self.spec_overrides}  # fmt: skip
        runs: list[UtilityRun] = []
        for seed in range(self.seeds):
            done: dict[str, UtilityRun] = {}
            for protocol in wanted:
                training = tuple(protocol.training_items(real, synthetic, seed))
                pretrain = done[protocol.pretrain] if protocol.pretrain else None
                spec = {**common, "protocol": protocol.name, "kind": protocol.kind, "ratio": protocol.ratio,
                        "seed": seed, "training": spec_digest(training),
                        "pretrain": spec_digest(pretrain.spec) if pretrain else None,
                        "learning_rate": self.finetune_learning_rate if pretrain else None}  # fmt: skip
                folder = self.work_dir / protocol.name / f"seed_{seed}"
                run = UtilityRun(protocol, seed, folder, training, spec, pretrain)
                done[protocol.name] = run
                runs.append(run)
        return runs

    def _check_work_dir(self) -> None:
        """Refuse a work directory whose runs were started with other settings (before any training)."""
        for run in self.runs:
            path = run.folder / "spec.json"
            if not path.is_file():
                continue
            try:
                stored = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue  # a spec.json cut short is rewritten
            if stored != run.spec:
                differing = sorted(k for k in set(stored) | set(run.spec) if stored.get(k) != run.spec.get(k))
                raise XRealInputError(
                    "--work-dir", f"{run.folder} holds a run made with other settings ({', '.join(differing)}); "
                    "use another --work-dir, or that study's options",
                )  # fmt: skip

    # -- running -------------------------------------------------------------------------------------------------

    def _run_overrides(self, run: UtilityRun) -> dict[str, Any]:
        overrides = {**self.overrides, "bundle_root": str(self.bundle), "output_dir": str(run.folder.resolve()),
                     "epochs": self.epochs, "seed": run.seed, "classes": list(self.classes)}  # fmt: skip
        if not self.verbose:
            overrides["train#event_handlers#stats"] = None  # the study's progress bar instead of per-iteration logs
        if self.device is not None:
            overrides["device"] = self.device
        if run.pretrain is not None:
            overrides["initial_weights"] = str(run.pretrain.model_path.resolve())
            if self.finetune_learning_rate is not None:
                overrides["learning_rate"] = self.finetune_learning_rate
        return overrides

    @contextlib.contextmanager
    def _bundle_logging(self) -> Iterator[str | bool]:
        """The workflow's logging file: the bundle's ``logging.conf`` when verbose, else none, MONAI's notice that
        none is used being silenced."""
        conf = self.bundle / "configs" / "logging.conf"
        if self.verbose:
            yield str(conf) if conf.is_file() else False
            return
        logger = logging.getLogger("monai.bundle.workflows")
        level = logger.level
        logger.setLevel(logging.ERROR)
        try:
            yield False
        finally:
            logger.setLevel(level)

    def _barrier(self) -> None:
        if self.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()

    def _train_and_test(self, run: UtilityRun, bar: tqdm) -> None:
        """Train ``run`` through the bundle workflow (resuming its checkpoint if any), predict the test set on rank 0
        and write ``result.json``."""
        from ignite.engine import Events
        from monai.bundle import ConfigWorkflow

        datalist = {"training": list(run.training), "test": self.test_items}
        # every rank writes the same files (atomically), so that none waits for another before the process group
        write_text_atomically(run.folder / "datalist.json", json.dumps(datalist, indent=1) + "\n")
        write_text_atomically(run.folder / "spec.json", json.dumps(run.spec, indent=2) + "\n")
        with self._bundle_logging() as logging_file:
            workflow = ConfigWorkflow(
                config_file=[str(f) for f in self.config_files], meta_file=str(self.meta_file),
                logging_file=logging_file, workflow_type="train", **self._run_overrides(run),
            )  # fmt: skip
            workflow.initialize()
        trainer = workflow.parser.get_parsed_content("train#trainer")
        network = workflow.parser.get_parsed_content("network")
        module = getattr(network, "module", network)
        resumed = workflow.parser.get_parsed_content("resume_checkpoint")
        start = bar.n
        initial: dict[str, Any] = {}
        started: dict[str, Any] = {"resumed_from": resumed}
        if run.pretrain is not None:
            initial = {"path": str(run.pretrain.model_path), "sha256": sha256_file(run.pretrain.model_path)}

        @trainer.on(Events.STARTED)  # after the bundle's checkpoint loaders, which initialize attached
        def _started(engine) -> None:
            started["start_epoch"] = engine.state.epoch
            if initial:  # the network now holds the pre-trained weights (unless resumed from a later checkpoint)
                state = torch.load(run.pretrain.model_path, map_location="cpu", weights_only=True)
                own = module.state_dict()
                initial["loaded"] = set(own) == set(state) and all(
                    torch.equal(own[k].detach().cpu(), state[k]) for k in state)  # fmt: skip

        @trainer.on(Events.EPOCH_COMPLETED)
        def _advance(engine) -> None:
            bar.n = start + engine.state.epoch
            bar.refresh()

        began = time.perf_counter()
        with self._bundle_logging():
            workflow.run()
        seconds = time.perf_counter() - began
        bar.n = start + self.epochs
        bar.refresh()
        self._barrier()
        if self.rank == 0:
            probabilities, labels = predict(workflow)
            expected = np.asarray([[item["labels"][c] for c in self.classes] for item in self.test_items])
            if probabilities.shape != expected.shape or not np.array_equal(labels, expected):
                raise RuntimeError(f"{run.name}: the test evaluator did not return the test set's labels in order")
            result = {"spec": run.spec, "protocol": run.protocol.name, "seed": run.seed,
                      "num_training": run.num_training(), "epochs": self.epochs, "seconds": round(seconds, 3),
                      "device": str(workflow.parser.get_parsed_content("device")), "world_size": self.world_size,
                      "network": type(network).__name__, "epoch_length": trainer.state.epoch_length,
                      **started, "initial_weights": initial or None,
                      "probabilities": probabilities.tolist()}  # fmt: skip
            write_text_atomically(run.result_path, json.dumps(result) + "\n")
        self._barrier()

    def run(self, progress: bool = False) -> dict:
        """Train and test every unfinished run, then report every protocol (finished runs are read back).

        Args:
            progress: a progress bar over the epochs still to train (rank 0).

        Returns:
            the report (see :func:`run_utility_study`).
        """
        todo = [run for run in self.runs if run.result() is None]
        trained = []
        with tqdm(total=len(todo) * self.epochs, unit="epoch", desc="utility", disable=not progress or self.rank != 0,
                  dynamic_ncols=True) as bar:  # fmt: skip
            try:
                for run in todo:
                    bar.set_postfix_str(run.name)
                    self._train_and_test(run, bar)
                    trained.append(run.name)
            finally:
                if self.world_size > 1:
                    from monai_xreal.engines import destroy_distributed

                    destroy_distributed()
        return self.report(trained)

    # -- reporting -----------------------------------------------------------------------------------------------

    def report(self, trained: Sequence[str] = ()) -> dict:
        """The report over the finished runs (all of them must be).

        Args:
            trained: the runs trained by this invocation (the others were finished before).
        """
        results = {}
        for run in self.runs:
            result = run.result()
            if result is None:
                raise RuntimeError(f"run {run.name} is not finished ({run.result_path})")
            results[run.name] = result
        truth = np.asarray([[item["labels"][c] for c in self.classes] for item in self.test_items])
        predictions = {p.name: np.stack([results[f"{p.name}/seed_{s}"]["probabilities"] for s in range(self.seeds)])
                       for p in self.protocols}  # fmt: skip
        stats = bootstrap_auc(predictions, truth, self.classes, self.bootstrap["samples"],
                              self.bootstrap["confidence"], self.bootstrap["seed"], reference="real")  # fmt: skip
        by_name = {run.name: run for run in self.runs}
        protocols = {}
        for protocol in self.protocols:
            first = by_name[f"{protocol.name}/seed_0"]
            entry = {"kind": protocol.kind, "ratio": protocol.ratio, "description": protocol.description,
                     "num_training": first.num_training()}  # fmt: skip
            if protocol.pretrain:
                entry["pretrain"] = {"protocol": protocol.pretrain, "epochs": self.epochs,
                                     "num_training": first.pretrain.num_training()}  # fmt: skip
            protocols[protocol.name] = {**entry, **stats[protocol.name]}
        devices = sorted({r["device"] for r in results.values()})
        return {
            "schema": SCHEMA,
            "settings": {
                "real": self.real.summary(), "synthetic": self.synthetic.summary(), "test": self.test.summary(),
                "classes": list(self.classes), "protocols": [p.name for p in self.protocols], "seeds": self.seeds,
                "epochs": self.epochs, "bundle": str(self.bundle), "overrides": self.spec_overrides,
                "finetune_learning_rate": self.finetune_learning_rate, "bootstrap": dict(self.bootstrap),
                "work_dir": str(self.work_dir),
            },
            "test": {"num_images": len(self.test_items), "labels": self.test_counts},
            "protocols": protocols,
            "runs": [{"run": run.name, "folder": str(run.folder), "trained_now": run.name in trained,
                      "seconds": results[run.name]["seconds"], "device": results[run.name]["device"],
                      "num_training": results[run.name]["num_training"],
                      "initial_weights": results[run.name]["initial_weights"]} for run in self.runs],
            "environment": {"devices": devices, "world_size": self.world_size, "torch": torch.__version__,
                            "monai": monai.__version__, "cpu": platform.processor() or platform.machine(),
                            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        }  # fmt: skip
