"""Checkpoint-compatible networks MEt3R needs: DUSt3R/MASt3R, DINO ViT-S/16 and FeatUp's JBU stack."""
