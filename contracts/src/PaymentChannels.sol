// SPDX-License-Identifier: MIT
pragma solidity ^0.8.26;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

import {IMarketplace} from "./interfaces/IMarketplace.sol";
import {IPaymentChannels} from "./interfaces/IPaymentChannels.sol";

/// @title PaymentChannels — metered, per-call access to an asset
/// @notice A payer deposits for one asset and names two keys: the `signer` (possibly a session key)
/// signs EIP-712 vouchers, each a ceiling `Voucher(channelId, maxClaimableAmount)`; the
/// `receiverAuthorizer` (the gateway's settlement key) claims what the gateway actually served, any
/// cumulative `totalClaimed` up to the ceiling and the deposit. Claims go straight into the asset's
/// vault. This is the shape of x402's `batch-settlement` scheme: the payer signs a ceiling, the
/// receiver claims what was served.
/// @dev Lifecycle: calls are served until `expiry`; the asset owner's `close` moves `expiry` to now.
/// Claims stay possible for `CLAIM_WINDOW` after `expiry` (so calls answered just before it are
/// paid); after that anyone may `reclaim`, which returns the unclaimed deposit to the payer. The
/// receiver may also end a channel at once with `claimAndSettle`. Voucher signatures are plain
/// ECDSA (65 bytes, low s, v 27 or 28, OpenZeppelin `ECDSA`), never ERC-1271, so that a gateway
/// verifying off chain gets the same answer as this contract whatever code the signer has.
contract PaymentChannels is IPaymentChannels, EIP712, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    // ---------------------------------------------------------------- storage

    /// @notice EIP-712 type of a voucher (field names and widths as in x402's batch-settlement `Voucher`).
    bytes32 public constant VOUCHER_TYPEHASH = keccak256("Voucher(uint256 channelId,uint128 maxClaimableAmount)");
    /// @notice How long after expiry the receiver may still claim (x402's minimum withdraw delay: 15 minutes).
    uint256 public constant CLAIM_WINDOW = 15 minutes;

    /// @notice The marketplace whose assets channels pay for.
    IMarketplace public immutable marketplace;
    /// @notice Number of channels opened; ids run from 1.
    uint256 public channelCount;
    /// @dev Channels by id.
    mapping(uint256 channelId => Channel) private _channels;

    // ---------------------------------------------------------------- constructor

    constructor(IMarketplace marketplace_) EIP712("agentmarket PaymentChannels", "1") {
        marketplace = marketplace_;
    }

    // ---------------------------------------------------------------- external

    /// @inheritdoc IPaymentChannels
    function open(
        uint256 assetId,
        address token,
        uint256 deposit,
        uint64 expiry,
        address signer,
        address receiverAuthorizer
    ) external nonReentrant returns (uint256 channelId) {
        (address assetToken,) = marketplace.paymentTerms(assetId);
        if (token != assetToken) revert TokenMismatch(assetId, assetToken, token);
        if (deposit == 0 || deposit > type(uint128).max) revert InvalidAmount(deposit);
        if (expiry <= block.timestamp) revert InvalidExpiry(expiry, block.timestamp);
        if (signer == address(0)) revert ZeroSigner();
        if (receiverAuthorizer == address(0)) revert ZeroReceiverAuthorizer();
        channelId = ++channelCount;
        _channels[channelId] = Channel({
            payer: msg.sender,
            expiry: expiry,
            settled: false,
            signer: signer,
            assetId: SafeCast.toUint96(assetId),
            receiverAuthorizer: receiverAuthorizer,
            token: token,
            deposit: uint128(deposit),
            claimed: 0
        });
        IERC20(token).safeTransferFrom(msg.sender, address(this), deposit);
        emit ChannelOpened(channelId, assetId, msg.sender, token, deposit, expiry, signer, receiverAuthorizer);
    }

    /// @inheritdoc IPaymentChannels
    function topUp(uint256 channelId, uint256 amount) external nonReentrant {
        Channel storage channel = _beforeExpiry(channelId);
        if (msg.sender != channel.payer) revert NotPayer(channelId, msg.sender);
        uint256 deposit = uint256(channel.deposit) + amount;
        if (amount == 0 || deposit > type(uint128).max) revert InvalidAmount(amount);
        channel.deposit = uint128(deposit);
        IERC20(channel.token).safeTransferFrom(msg.sender, address(this), amount);
        emit ChannelToppedUp(channelId, msg.sender, amount, deposit);
    }

    /// @inheritdoc IPaymentChannels
    function extend(uint256 channelId, uint64 newExpiry) external {
        Channel storage channel = _beforeExpiry(channelId);
        if (msg.sender != channel.payer) revert NotPayer(channelId, msg.sender);
        if (newExpiry <= channel.expiry) revert InvalidExpiry(newExpiry, channel.expiry);
        channel.expiry = newExpiry;
        emit ChannelExtended(channelId, msg.sender, newExpiry);
    }

    /// @inheritdoc IPaymentChannels
    function claim(uint256 channelId, uint128 maxClaimableAmount, uint128 totalClaimed, bytes calldata signature)
        external
        nonReentrant
    {
        Channel storage channel = _claimable(channelId);
        _claim(channelId, channel, maxClaimableAmount, totalClaimed, signature);
    }

    /// @inheritdoc IPaymentChannels
    function claimAndSettle(
        uint256 channelId,
        uint128 maxClaimableAmount,
        uint128 totalClaimed,
        bytes calldata signature
    ) external nonReentrant {
        Channel storage channel = _claimable(channelId);
        if (totalClaimed > channel.claimed) _claim(channelId, channel, maxClaimableAmount, totalClaimed, signature);
        _settle(channelId, channel);
    }

    /// @inheritdoc IPaymentChannels
    function close(uint256 channelId) external {
        Channel storage channel = _beforeExpiry(channelId);
        if (msg.sender != marketplace.ownerOf(channel.assetId)) revert NotChannelAssetOwner(channelId, msg.sender);
        uint64 expiry = uint64(block.timestamp);
        channel.expiry = expiry;
        emit ChannelClosed(channelId, msg.sender, expiry);
    }

    /// @inheritdoc IPaymentChannels
    function reclaim(uint256 channelId) external nonReentrant {
        Channel storage channel = _unsettled(channelId);
        uint256 reclaimableAt = uint256(channel.expiry) + CLAIM_WINDOW;
        if (block.timestamp < reclaimableAt) revert ReclaimTooEarly(channelId, reclaimableAt);
        _settle(channelId, channel);
    }

    // ---------------------------------------------------------------- views

    /// @inheritdoc IPaymentChannels
    function getChannel(uint256 channelId) external view returns (Channel memory) {
        return _existing(channelId);
    }

    /// @inheritdoc IPaymentChannels
    function payment(uint256 channelId) external view returns (address payer, uint256 assetId, uint256 claimed) {
        Channel storage channel = _existing(channelId);
        return (channel.payer, channel.assetId, channel.claimed);
    }

    /// @inheritdoc IPaymentChannels
    function voucherDigest(uint256 channelId, uint128 maxClaimableAmount) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(VOUCHER_TYPEHASH, channelId, maxClaimableAmount)));
    }

    // ---------------------------------------------------------------- internal

    function _existing(uint256 channelId) internal view returns (Channel storage channel) {
        channel = _channels[channelId];
        if (channel.payer == address(0)) revert UnknownChannel(channelId);
    }

    function _unsettled(uint256 channelId) internal view returns (Channel storage channel) {
        channel = _existing(channelId);
        if (channel.settled) revert AlreadySettled(channelId);
    }

    function _beforeExpiry(uint256 channelId) internal view returns (Channel storage channel) {
        channel = _unsettled(channelId);
        if (block.timestamp >= channel.expiry) revert ChannelExpired(channelId, channel.expiry);
    }

    function _claimable(uint256 channelId) internal view returns (Channel storage channel) {
        channel = _unsettled(channelId);
        if (msg.sender != channel.receiverAuthorizer) revert NotReceiverAuthorizer(channelId, msg.sender);
        uint256 claimDeadline = uint256(channel.expiry) + CLAIM_WINDOW;
        if (block.timestamp >= claimDeadline) revert ClaimWindowOver(channelId, claimDeadline);
    }

    function _claim(
        uint256 channelId,
        Channel storage channel,
        uint128 maxClaimableAmount,
        uint128 totalClaimed,
        bytes calldata signature
    ) internal {
        uint128 claimed = channel.claimed;
        if (totalClaimed <= claimed) revert ClaimNotIncreasing(channelId, claimed, totalClaimed);
        if (totalClaimed > maxClaimableAmount) revert ClaimAboveVoucher(channelId, totalClaimed, maxClaimableAmount);
        if (totalClaimed > channel.deposit) revert ClaimExceedsDeposit(channelId, totalClaimed, channel.deposit);
        (address recovered,,) = ECDSA.tryRecoverCalldata(voucherDigest(channelId, maxClaimableAmount), signature);
        if (recovered != channel.signer) revert InvalidVoucherSignature(channelId, recovered);
        channel.claimed = totalClaimed;
        uint256 amount = totalClaimed - claimed;
        uint256 assetId = channel.assetId;
        IERC20(channel.token).safeTransfer(marketplace.vaultOf(assetId), amount);
        emit ChannelClaimed(channelId, assetId, msg.sender, amount, totalClaimed);
    }

    function _settle(uint256 channelId, Channel storage channel) internal {
        channel.settled = true;
        uint256 claimed = channel.claimed;
        uint256 refund = channel.deposit - claimed;
        if (refund > 0) IERC20(channel.token).safeTransfer(channel.payer, refund);
        emit ChannelSettled(channelId, msg.sender, claimed, refund);
    }
}
