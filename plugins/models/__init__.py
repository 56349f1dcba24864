"""Built-in model plugins: the paper's models (resnet, ours), its baselines (amnet, memnet,
squalli) and released models (resmem, vitmem, timm/*). `*_net` modules hold networks that
import torch at module level; they are imported only when a model is built."""
