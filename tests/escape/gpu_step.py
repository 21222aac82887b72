"""Case 14: one CUDA training step inside the sandbox (run only where /dev/nvidia* exists)."""
import json

import torch

assert torch.cuda.is_available(), "CUDA not available inside the sandbox"
model = torch.nn.Linear(16, 4).cuda()
opt = torch.optim.SGD(model.parameters(), lr=0.1)
x = torch.randn(32, 16, device="cuda")
loss = model(x).pow(2).mean()
loss.backward()
opt.step()
torch.cuda.synchronize()
print(json.dumps({"event": "escape", "device": torch.cuda.get_device_name(0), "loss": loss.item()}), flush=True)
