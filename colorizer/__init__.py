"""colorizer: a GAN that learns to colour line art (U-Net generator, PatchGAN, denoised hints)."""
