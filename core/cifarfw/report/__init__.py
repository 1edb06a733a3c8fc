"""Built-in reporters (console, run record, TensorBoard) and the comparison reporter."""

# The metric names every trainer reports, and the TensorBoard tag each is written under,
# so runs of every framework overlay in TensorBoard.
METRIC_TAGS = {
    "train_loss": "loss/train",
    "test_loss": "loss/test",
    "train_acc": "accuracy/train",
    "test_acc": "accuracy/test",
    "lr": "lr",
    "seconds": "time/epoch_s",
}
REQUIRED_METRICS = ("train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds")
