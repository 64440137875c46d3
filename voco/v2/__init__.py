"""VoCo v2 (Luffy03/Large-Scale-Medical, `Self-supervised/`): one shared SwinUNETR encoder, student and
EMA-teacher projection heads only, intra- + inter-volume + regulariser loss, 3x3 base crops of 64^3.

model.py  VoCoV2 (backbone / student / teacher, the original's SSL_head key layout)
loss.py   the v2 loss, vectorised, and a per-volume loop reference for checks and the benchmark
data.py   the working-volume pre-processing (1.5 mm spacing, 192x192x64 window) and crop geometry
engine.py the v2 training step (the loop itself is voco.engine.train)
"""
