"""Thin adapters from other libraries' attention kernels to the flash convention (flash_attn_func's signature)."""
