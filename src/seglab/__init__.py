"""seglab: semantic segmentation on PyTorch (FCN-VGG16, DeepLabV3+ with aligned Xception or ResNet-50)."""

__version__ = "0.1.0"
