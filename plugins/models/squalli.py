"""`squalli`: VGG16 memorability features plus a caption-space image embedding.

Squalli-Houssaini, Duong, Gwenaëlle, Demarty: "Deep Learning for Predicting Image
Memorability", ICASSP 2018.

RECONSTRUCTED: the full paper was not available to us; only the abstract and the numbers
quoted by Leonardi et al. 2019 were. What is ours, not the paper's:
- the fusion: VGG16 fc7 (4096, fine-tuned on LaMem) concatenated with a caption-space
  embedding of the image -> MLP (5120 -> 512 -> ReLU -> Dropout -> 1) trained with MSE;
- the caption-space embedding stands in for the image encoder of Kiros et al.'s
  visual-semantic embedding (VGG19 fc7 -> Linear 4096->1024 -> unit norm). Its VGG19 is
  ImageNet-initialised and frozen; the projection is learnt here (the COCO-trained
  projection of the captioning model is not available);
- the recipe (Adam, lr 1e-5, batch 32, 30 epochs, VGG19 frozen).
Total 280,648,577 parameters vs the reported 280M: VGG16 and VGG19 up to fc7
(134,260,544 + 139,570,240), projection 4,195,328, MLP 2,622,465.
Every deviation, model by model: docs/models.md#squalli.
"""

from __future__ import annotations

from membench import hookimpl
from membench.options import weights_option
from membench.spec import ModelSpec, Preprocess, Reported, Stage

CITATION = ("Squalli-Houssaini, Duong, Gwenaelle, Demarty, Deep Learning for Predicting Image "
            "Memorability, ICASSP 2018")

RECIPE = Stage(name="finetune", epochs=30, batch_size=32, lr=1e-5, optimizer="adam",
               schedule="constant", frozen=("caption_encoder",))


def build_squalli(ctx):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from torchvision.models import vgg16, vgg19

    def up_to_fc7(net):
        net.classifier = net.classifier[:-1]  # drop the 1000-way fc8, keep fc7 + ReLU + Dropout
        return net

    class Squalli(nn.Module):
        """(B,3,H,W) normalised -> (B,) scores (224x224 by default; VGG's adaptive pool
        accepts other sizes)."""

        def __init__(self):
            super().__init__()
            self.vgg16 = up_to_fc7(vgg16(weights=None))
            self.caption_encoder = up_to_fc7(vgg19(weights=None))
            self.caption_projection = nn.Linear(4096, 1024)
            self.head = nn.Sequential(nn.Linear(4096 + 1024, 512), nn.ReLU(inplace=True),
                                      nn.Dropout(0.5), nn.Linear(512, 1))

        def forward(self, x):
            caption_space = F.normalize(self.caption_projection(self.caption_encoder(x)), dim=1)
            return self.head(torch.cat((self.vgg16(x), caption_space), 1)).squeeze(1)

    with ctx.on_device():
        model = Squalli()
    if ctx.meta:
        return model
    explicit = ctx.options.get("weights")
    if explicit:
        from membench.weights.resolve import load_state_dict, resolve_file

        model.load_state_dict(load_state_dict(resolve_file("squalli.pth", "Squalli", explicit)))
    elif ctx.pretrained and ctx.init == "imagenet":
        from membench.weights.resolve import torchvision_weights

        for name, net in (("vgg16", model.vgg16), ("vgg19", model.caption_encoder)):
            state = torchvision_weights(name, f"{name.upper()} ImageNet (Squalli)")
            net.load_state_dict({k: v for k, v in state.items() if not k.startswith("classifier.6.")})
    return model


@hookimpl
def register_models(register):
    register(ModelSpec(
        name="squalli",
        build=build_squalli,
        summary="Squalli-Houssaini et al.: VGG16 + caption-space VGG19 embedding -> MLP (reconstruction)",
        citation=CITATION,
        reported=Reported(rho=0.720, mse=0.0092, params=280_000_000,
                          source="Leonardi et al. 2019, Table 2 (Squalli-Houssaini et al. 2018)",
                          note="MSE estimated by the authors of Leonardi et al."),
        preprocess=Preprocess(size=(256, 256), crop=224, train="crop"),
        recipe=(RECIPE,),
        options=(weights_option("a trained squalli state_dict", trained=True),),
        tags=("paper", "table2", "reconstruction"),
        params_expected={"total": 280_648_577},
        notes="Reconstruction (the full paper was unavailable): fusion MLP, the stand-in for the "
              "captioning model's image embedding (ImageNet VGG19, frozen, learnt projection) and "
              "the recipe are membench's. 280,648,577 parameters, +0.23% of the reported 280M.",
    ))
