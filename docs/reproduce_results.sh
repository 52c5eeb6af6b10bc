#!/usr/bin/env bash
# Every run behind docs/results.md, in the order they were made (about 45 minutes on 2 CPU cores).
# Results land in the local MLflow store (runs/mlflow.db); `make ui` to browse them.
set -euo pipefail
cd "$(dirname "$0")/.."
V=.venv/bin/vaelab
Q=trainer.progress=false  # no progress bars in the log

# 1. pytorch/examples replica, 3 seeds
$V --multirun experiment=pytorch_example trainer.seed=0,1,2 $Q
# 2. the Keras seed replica
$V experiment=keras_seed $Q
# 3. latent size sweep at beta = 1, with the importance-weighted NLL (k = 1000)
$V --multirun model.latent_dim=2,5,10,20,50 trainer.iw_samples=1000 tracking.experiment=latent_sweep $Q
# 4. beta sweep at z = 10 (the sweep's parent run gets the rate-distortion figure)
$V --multirun model.latent_dim=10 loss.beta=0.25,0.5,1,2,4,8 tracking.experiment=beta_sweep $Q
# 5. Burda et al.'s VAE on dynamically binarized MNIST, IW-NLL with k = 5000
$V experiment=iwae_burda $Q

# 6. Quality of the parts chosen in YAML (docs/results.md section 6; made on a GPU, ~8 minutes there,
#    several hours on 2 CPU cores). Tables and pictures: .venv/bin/python docs/quality_tables.py
# 6.1 the keras-io convolutional VAE beside the MLP at z = 2 (keras_seed above is the other MLP)
$V experiment=keras_conv $Q
# 6.1/6.5 the default MLP at z = 2 and 20, for the probe
$V --multirun model.latent_dim=2,20 tracking.experiment=probe $Q
# 6.2 Bernoulli against continuous Bernoulli at z = 10
$V --multirun model.latent_dim=10 likelihood=bernoulli,continuous_bernoulli tracking.experiment=likelihood $Q
# 6.3 every KL schedule at z = 50
$V --multirun model.latent_dim=50 kl=constant,warmup,cyclical,capacity,free_bits tracking.experiment=kl_schedules $Q
# 6.4 IWAE (k = 5) on Burda et al.'s setup (the VAE is section 5's run)
$V experiment=iwae_burda loss=iwae loss.k=5 $Q
