"""i2iuda: unsupervised domain adaptation of semantic segmentation through image-to-image translation."""
__version__ = "0.1.0"
