"""`tracejit.nn` (also `tj.nn`): torch.nn's modules, layers, losses and helpers."""
from . import functional, init, parallel, utils
from .parameter import Parameter
from .module import Module
from .container import ModuleDict, ModuleList, ParameterDict, ParameterList, Sequential
from .linear import Flatten, Identity, Linear, Unflatten
from .activation import (CELU, ELU, GELU, GLU, SELU, Hardsigmoid, Hardswish, Hardtanh,
                         LeakyReLU, LogSigmoid, LogSoftmax, Mish, PReLU, ReLU, ReLU6, SiLU,
                         Sigmoid, Softmax, Softmin, Softplus, Softsign, Tanh, Tanhshrink,
                         Threshold)
from .normalization import GroupNorm, LayerNorm, RMSNorm
from .conv import Conv1d, Conv2d, Conv3d, ConvTranspose1d, ConvTranspose2d, ConvTranspose3d
from .pooling import (AdaptiveAvgPool1d, AdaptiveAvgPool2d, AdaptiveAvgPool3d, AvgPool1d,
                      AvgPool2d, AvgPool3d, MaxPool1d, MaxPool2d, MaxPool3d)
from .batchnorm import BatchNorm1d, BatchNorm2d, BatchNorm3d
from .sync_batchnorm import SyncBatchNorm
from .dropout import Dropout, Dropout1d, Dropout2d
from .fold import Fold, Unfold
from .adaptive_max import AdaptiveMaxPool1d, AdaptiveMaxPool2d, AdaptiveMaxPool3d
from .instancenorm import (InstanceNorm1d, InstanceNorm2d, InstanceNorm3d, PixelShuffle,
                           PixelUnshuffle)
from .interpolate import Upsample
from .local_norm_pool import LocalResponseNorm, LPPool1d, LPPool2d
from .sparse import Embedding
from .loss import (BCELoss, BCEWithLogitsLoss, CosineSimilarity, CrossEntropyLoss, HuberLoss,
                   KLDivLoss, L1Loss, MSELoss, NLLLoss, SmoothL1Loss)
from .attention import MultiheadAttention
from .transformer import TransformerEncoder, TransformerEncoderLayer
from .transformer_decoder import Transformer, TransformerDecoder, TransformerDecoderLayer
from .padding import (CircularPad1d, CircularPad2d, ConstantPad1d, ConstantPad2d,
                      ReflectionPad1d, ReflectionPad2d, ReplicationPad1d, ReplicationPad2d,
                      ZeroPad1d, ZeroPad2d)
from .channel_layers import (ChannelShuffle, Softmax2d, UpsamplingBilinear2d,
                             UpsamplingNearest2d)
from .loss_more import CTCLoss
from .loss_more import (CosineEmbeddingLoss, GaussianNLLLoss, HingeEmbeddingLoss,
                        MarginRankingLoss, MultiLabelSoftMarginLoss, MultiMarginLoss,
                        PairwiseDistance, PoissonNLLLoss, SoftMarginLoss, TripletMarginLoss)
from .activation_shrink import Hardshrink, Softshrink
from .bilinear_unpool import Bilinear, MaxUnpool1d, MaxUnpool2d
from .embedding_bag import EmbeddingBag
from .lazy import LazyLinear, UninitializedParameter
from .rnn import GRU, GRUCell, LSTM, LSTMCell, RNN, RNNBase, RNNCell, RNNCellBase
