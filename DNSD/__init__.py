"""DNSD: Deep Networks with Stochastic Depth (Huang et al., 2016) on CIFAR-10, in PaddlePaddle."""
