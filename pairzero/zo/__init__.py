"""Zeroth-order (MeZO-style two-point SPSA) engine: manifest, perturbation, engine, checkpoint."""

from pairzero.zo.checkpoint import ZOCheckpoint, export_pretrained, tensors_sha256
from pairzero.zo.engine import ZOEngine, clip_scalar, no_decay_names, two_point_scalar
from pairzero.zo.manifest import ManifestMismatch, ParamManifest, build_manifest, check_manifest
from pairzero.zo.perturb import DecayStep, ZStep, add_perturbation_, run_program_

__all__ = [
    "ZOEngine",
    "ZOCheckpoint",
    "export_pretrained",
    "tensors_sha256",
    "clip_scalar",
    "two_point_scalar",
    "no_decay_names",
    "ParamManifest",
    "ManifestMismatch",
    "build_manifest",
    "check_manifest",
    "ZStep",
    "DecayStep",
    "add_perturbation_",
    "run_program_",
]
