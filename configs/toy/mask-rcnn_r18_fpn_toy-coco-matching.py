# Toy baseline on the matching task: the small Mask R-CNN of
# mask-rcnn_r18_fpn_toy-coco.py (ResNet-18 at 1/4 width + FPN, from scratch,
# 96x256 images), trained on toy COCO matching instead of toy COCO.
#
# Toy COCO matching (nonlocal_plugin/datasets/toy_matching.py, built into
# data/toy_coco_matching/ on first use): a legend strip along one edge holds
# a red, a green and a blue marker, one triangle, one square and one circle,
# in a random per-image assignment; every object is a gray triangle, square
# or circle in the far 40 % of the image, and its class (red_match,
# green_match, blue_match) is the colour of the legend marker of its own
# shape. Objects of one image need different far-away context: the context
# depends on the query, unlike the toy COCO cue bar.
# Published: none (toy data).
_base_ = ['./mask-rcnn_r18_fpn_toy-coco.py']

data_root = 'data/toy_coco_matching/'
toy_dataset = dict(
    kind='coco_matching',
    data_root=data_root,
    seed=0,
    num_train=320,
    num_val=64,
    img_size=(96, 256))
classes = ('red_match', 'green_match', 'blue_match')
metainfo = dict(
    classes=classes, palette=[(220, 40, 40), (40, 200, 60), (50, 80, 230)])

train_dataloader = dict(
    dataset=dict(data_root=data_root, metainfo=metainfo))
val_dataloader = dict(dataset=dict(data_root=data_root, metainfo=metainfo))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator
