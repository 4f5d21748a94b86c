"""kMaX-DeepLab model: backbones, pixel decoder, transformer decoder and heads."""
