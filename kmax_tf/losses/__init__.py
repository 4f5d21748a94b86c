"""kMaX-DeepLab training objective: Hungarian matching, PQ-style, mask-ID, instance
discrimination and semantic losses."""
