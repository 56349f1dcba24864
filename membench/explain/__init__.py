"""What a model attends to (`membench explain`): maps over an image, and their overlays.

    maps     the model's own soft attention (contract.attention_maps: `ours`, AMNet) or
             Grad-CAM of any CNN/ViT through pytorch_grad_cam (the `grad-cam` package)
    overlay  the image with each map laid over it (PNG), and the maps themselves (.npy)
"""
