"""cifarfw's CIFAR-10 dataset plugin: the official python layout, verified, downloaded and read safely."""
