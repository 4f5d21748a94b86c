"""Building blocks shared by the backbones, the pixel decoder and the kMaX decoder."""
