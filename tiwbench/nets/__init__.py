"""Score networks and discriminator backbones."""
