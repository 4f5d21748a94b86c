"""Pixel encoders returning endpoint dicts `stage1..stage5` / `res1..res5`."""
