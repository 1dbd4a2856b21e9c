# Toy baseline: a small FCN (ResNetV1c-18-D8 at 1/4 width), trained from
# scratch on the toy Cityscapes dataset (128x256 images), in minutes on CPU.
#
# Toy Cityscapes (nonlocal_plugin/datasets/toy.py, built into
# data/toy_cityscapes/ on first use): 'road' background, a cue bar
# ('wall') along one side edge and gray blobs in the other half,
# which are 'car', 'truck' or 'bus' by the colour of the far-away cue
# (red, green, blue). This baseline has no block with global context;
# compare with fcn_r18-d8-nl_toy-cityscapes.py. The mIoU averages the 5
# classes present (the other Cityscapes classes give NaN and are skipped).
# The SyncBN of mmseg's config is trained as BN in one process.
# Published: none (toy data).
_base_ = [
    'mmseg::fcn/fcn_r18-d8_4xb2-80k_cityscapes-512x1024.py',
    '../_base_/nonlocal_plugin.py'
]

data_root = 'data/toy_cityscapes/'
toy_dataset = dict(
    kind='cityscapes',
    data_root=data_root,
    seed=0,
    num_train=160,
    num_val=32,
    img_size=(128, 256))
crop_size = (128, 256)

model = dict(
    pretrained=None,
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        type='nonlocal_plugin.ResNetV1cNL',
        stem_channels=16,
        base_channels=16),
    decode_head=dict(in_channels=128, channels=64),
    auxiliary_head=dict(in_channels=64, channels=32))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(crop_size[1], crop_size[0]), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')
]
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

max_iters = 400
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.01))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(
        type='PolyLR',
        eta_min=1e-5,
        power=0.9,
        begin=50,
        end=max_iters,
        by_epoch=False)
]
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(interval=200, max_keep_ckpts=1))
randomness = dict(seed=0)
# Threads of torch on a machine without CUDA (read by nonlocal_plugin's
# tools): one thread is faster and steadier on a small, shared CPU.
torch_threads = 1
