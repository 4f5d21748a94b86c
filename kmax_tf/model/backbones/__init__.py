"""Pixel encoders (backbones) returning deeplab2-style endpoint dicts."""
