# Toy baseline: a small Mask R-CNN (ResNet-18 at 1/4 width + FPN), trained
# from scratch on the toy COCO dataset (96x256 images), in minutes on CPU.
#
# Toy COCO (nonlocal_plugin/datasets/toy.py, built into data/toy_coco/ on
# first use): every object is a gray polygon; its class (red_cue,
# green_cue, blue_cue) is the colour of a bar along the far edge of the
# image, about 90 px or more away. This baseline has no block with global
# context; compare with mask-rcnn_r18-nl-c4_fpn_toy-coco.py.
# Published: none (toy data).
_base_ = [
    'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py',
    '../_base_/nonlocal_plugin.py'
]

data_root = 'data/toy_coco/'
toy_dataset = dict(
    kind='coco',
    data_root=data_root,
    seed=0,
    num_train=320,
    num_val=64,
    img_size=(96, 256))
classes = ('red_cue', 'green_cue', 'blue_cue')
metainfo = dict(
    classes=classes, palette=[(220, 40, 40), (40, 200, 60), (50, 80, 230)])
img_scale = (256, 96)  # (width, height)

model = dict(
    backbone=dict(
        type='nonlocal_plugin.ResNetNL',
        depth=18,
        base_channels=16,
        frozen_stages=-1,
        norm_eval=False,
        init_cfg=None),
    neck=dict(in_channels=[16, 32, 64, 128], out_channels=64),
    rpn_head=dict(in_channels=64, feat_channels=64),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=64),
        bbox_head=dict(
            in_channels=64, fc_out_channels=256, num_classes=len(classes)),
        mask_roi_extractor=dict(out_channels=64),
        mask_head=dict(
            num_convs=2,
            in_channels=64,
            conv_out_channels=64,
            num_classes=len(classes))),
    train_cfg=dict(
        rpn=dict(sampler=dict(num=128)),
        rpn_proposal=dict(nms_pre=1000, max_per_img=256),
        rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(
        rpn=dict(nms_pre=500, max_per_img=100),
        rcnn=dict(max_per_img=20)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[9, 11],
        gamma=0.1)
]
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.05),
    clip_grad=dict(max_norm=10, norm_type=2))
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=4, max_keep_ckpts=1))
log_processor = dict(window_size=10)
randomness = dict(seed=0)
# Threads of torch on a machine without CUDA (read by nonlocal_plugin's
# tools): one thread is faster and steadier on a small, shared CPU.
torch_threads = 1
