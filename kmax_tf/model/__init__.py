"""kMaX-DeepLab model: backbones, pixel decoder, kMaX transformer decoder, heads, builder."""
