"""colorizer: a GAN that learns to colour line art (U-Net generator, PatchGAN, denoised hints), and
the path that colours a drawing with it at its own size (``inference.Colorizer``). README's
"Architecture" lists the modules in the order data flows."""
