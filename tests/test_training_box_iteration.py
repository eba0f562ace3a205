"""Box-guided iteration: MONAI's own iteration with weight x box-attention loss added, and nothing at weight 0."""

from __future__ import annotations

import copy

import pytest
import torch
from monai.engines import SupervisedTrainer
from torch import nn

from monai_fracture.networks import build_network
from monai_fracture.networks.registry import pooling_layer
from monai_fracture.training.box_guidance import BoxAttentionLoss, FeatureMapTap, class_activation_map
from monai_fracture.training.box_iteration import BoxGuidedIteration, box_guided_iteration


def _batch() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    masks = torch.zeros(4, 1, 64, 64)
    masks[1, :, 40:, 40:] = 1  # boxes on the fractured images only, as YoloBoxMaskd makes them
    masks[2, :, :20, 10:30] = 1
    return {"image": torch.randn(4, 3, 64, 64), "label": torch.tensor([0, 1, 1, 0]), "box_mask": masks}


def _network() -> nn.Module:
    torch.manual_seed(0)
    net = build_network("efficientnet-lite0", pretrained=False, dropout=0.0)
    nn.init.normal_(net._fc.weight, std=0.1)  # a head that already prefers some positions
    return net


def _trainer(net: nn.Module, iteration_update=None) -> SupervisedTrainer:
    return SupervisedTrainer(device=torch.device("cpu"), max_epochs=1, train_data_loader=[_batch()], network=net,
                             optimizer=torch.optim.SGD(net.parameters(), lr=0.5), loss_function=nn.CrossEntropyLoss(),
                             iteration_update=iteration_update, decollate=False)


def test_one_step_equals_cross_entropy_plus_weighted_box_loss_by_hand():
    weight = 0.5
    net = _network()
    reference = copy.deepcopy(net)
    trainer = _trainer(net, BoxGuidedIteration(box_loss_weight=weight))
    loss_function = trainer.loss_function
    torch.manual_seed(2)  # drop-connect draws the same masks in both runs
    trainer.run()
    output = trainer.state.output
    assert trainer.loss_function is loss_function  # restored after the iteration

    batch = _batch()
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.5)
    reference.train()
    torch.manual_seed(2)
    with FeatureMapTap(reference) as tap:
        logits = reference(batch["image"])
    class_loss = nn.CrossEntropyLoss()(logits, batch["label"])
    box_loss = BoxAttentionLoss()(class_activation_map(tap.features, reference._fc), batch["box_mask"])
    optimizer.zero_grad()
    (class_loss + weight * box_loss).backward()
    optimizer.step()

    assert float(box_loss.detach()) > 0.05
    torch.testing.assert_close(output["box_loss"], box_loss.detach())
    torch.testing.assert_close(output["class_loss"], class_loss.detach())
    torch.testing.assert_close(output["loss"], (class_loss + weight * box_loss).detach())
    for (name, got), want in zip(net.named_parameters(), reference.parameters()):
        torch.testing.assert_close(got, want, msg=name)
    # the box term did change the step: cross-entropy alone ends elsewhere
    plain = _network()
    torch.manual_seed(2)
    _trainer(plain).run()
    assert not torch.allclose(plain._conv_head.weight, net._conv_head.weight)


def test_weight_zero_keeps_the_trainers_own_iteration():
    assert box_guided_iteration(0.0) is None
    trainer = _trainer(_network(), box_guided_iteration(0.0))
    assert trainer._process_function == trainer._iteration
    with pytest.raises(ValueError, match="box_loss_weight"):
        BoxGuidedIteration(box_loss_weight=0.0)


def test_a_batch_without_masks_is_an_error_that_says_what_to_do():
    net = _network()
    batch = {k: v for k, v in _batch().items() if k != "box_mask"}
    trainer = SupervisedTrainer(device=torch.device("cpu"), max_epochs=1, train_data_loader=[batch], network=net,
                                optimizer=torch.optim.SGD(net.parameters(), lr=0.1), loss_function=nn.CrossEntropyLoss(),
                                iteration_update=BoxGuidedIteration(0.2), decollate=False)
    with pytest.raises(KeyError, match="with_box_masks"):
        trainer.run()


def test_the_feature_map_layer_comes_from_the_registry():
    for name in ("efficientnet-lite0", "efficientnet-b0"):
        assert pooling_layer(build_network(name, pretrained=False)) == "_avg_pooling"

    class Plain(nn.Module):  # a network no family claims: its last global average pooling
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(4), nn.Conv2d(4, 8, 1))
            self.pool = nn.AdaptiveAvgPool2d(1)

    assert pooling_layer(Plain()) == "pool"
    with pytest.raises(ValueError, match="no global average pooling"):
        pooling_layer(nn.Sequential(nn.Conv2d(3, 4, 3)))
