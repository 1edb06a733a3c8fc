"""cifarfw-alexnet: torchvision's AlexNet, fine-tuned on CIFAR-10 as in the study.

The plugin module (:mod:`cifarfw_alexnet.plugin`) imports no torch; the model lives in
:mod:`cifarfw_alexnet.model` and the weight loading in :mod:`cifarfw_alexnet.weights`.
"""

__version__ = "0.1.0"
