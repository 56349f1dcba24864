"""Weights: where a model's tensors come from, and checks that they are what they claim.

    resolve           an explicit file, then torch's hub cache, then a download; load_state_dict
    safe_load         the one loader of pickle-based files: weights-only, allow-lists, value checks
    released          authors' released weights: fetch or import, convert exactly, install
    caffemodel        reading Caffe's binary files without Caffe
    checkpoint_check  loading a trained checkpoint into its model, or saying whose it is
    files_loaded      the weight files a job loaded, with their sha256, for its run JSON

Plugins use the helpers exported here (docs/plugins.md, section 7).
"""

from membench.weights.resolve import hub_checkpoints_dir, load_state_dict, resolve_file, torchvision_weights

__all__ = ["hub_checkpoints_dir", "load_state_dict", "resolve_file", "torchvision_weights"]
