"""Case 15: a legitimate torch training run with DataLoader workers; must succeed. argv: NUM_WORKERS"""
import json
import sys

import torch
from torch.utils.data import DataLoader, TensorDataset

torch.manual_seed(0)
x = torch.randn(256, 8)
y = x @ torch.randn(8, 1)
model = torch.nn.Linear(8, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.05)
loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, num_workers=int(sys.argv[1]))
for epoch in range(3):
    for xb, yb in loader:
        loss = torch.nn.functional.mse_loss(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(json.dumps({"event": "epoch", "epoch": epoch, "loss": loss.item()}), flush=True)
torch.save(model.state_dict(), "model.pt")
