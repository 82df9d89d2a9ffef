"""Published figures of Banerjee et al. (WACV 2020), measured on their own test set — a reference,
not the same experiment as ours on LFW."""

PAPER_SOURCE = "Banerjee et al., WACV 2020 (their test set, not LFW)"
PAPER_COLUMNS = ("match", "SSIM", "FID", "PieAPP")
PAPER_ROWS = {
    "GenFace": (0.543, 0.491, None, 3.536),
    "DeepFill v1": (0.481, 0.321, None, 3.204),
    "SymmFCNet": (0.457, 0.333, None, 2.434),
    "EdgeConnect": (0.454, 0.178, None, 3.106),
    "DeepFake": (0.459, 0.448, None, 1.857),
    "ProGAN variant": (0.668, 0.466, 103.71, 2.255),
    "cascaded (paper)": (0.722, 0.753, 46.12, 1.256),
    "ablation: l2 loss": (0.520, 0.413, 166.76, 2.489),
    "ablation: without L_adv": (0.522, 0.411, 132.71, 2.320),
    "ablation: without L_id": (0.609, 0.519, 91.65, 1.956),
    "ablation: without L_pc": (0.624, 0.528, 101.44, 2.046),
}
