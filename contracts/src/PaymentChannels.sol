// SPDX-License-Identifier: MIT
pragma solidity ^0.8.26;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {SignatureChecker} from "@openzeppelin/contracts/utils/cryptography/SignatureChecker.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

import {Marketplace} from "./Marketplace.sol";

/// @title PaymentChannels — metered, per-call access to an asset
/// @notice A payer deposits for one asset. The channel's signer (possibly a session key) signs
/// EIP-712 vouchers for cumulative amounts; the gateway verifies them off-chain and now and then
/// claims the increase, which goes straight into the asset's vault. After expiry the payer
/// reclaims the rest; the asset's owner may close early. Thousands of calls, a few transactions.
contract PaymentChannels is EIP712, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    /// @notice One channel, packed into four slots.
    struct Channel {
        address payer;
        uint64 expiry;
        bool closed;
        address signer;
        address token;
        uint128 deposit;
        uint128 claimed;
        uint256 assetId;
    }

    // ---------------------------------------------------------------- errors

    /// @notice No channel has id `channelId`.
    error UnknownChannel(uint256 channelId);
    /// @notice Only the channel's payer may do this.
    error NotPayer(uint256 channelId, address caller);
    /// @notice Only the asset's owner may close a channel early.
    error NotAssetOwner(uint256 channelId, address caller);
    /// @notice The channel was already closed or reclaimed.
    error ChannelClosed(uint256 channelId);
    /// @notice The channel expired; only reclaim is possible.
    error ChannelExpired(uint256 channelId, uint256 expiry);
    /// @notice The channel has not expired yet.
    error ChannelNotExpired(uint256 channelId, uint256 expiry);
    /// @notice An expiry must lie in the future (and after the current one, to extend).
    error InvalidExpiry(uint256 expiry, uint256 notAfter);
    /// @notice A channel's token must be the asset's token.
    error TokenMismatch(uint256 assetId, address expected, address given);
    /// @notice Deposits and top-ups must be positive and fit in 128 bits.
    error InvalidAmount(uint256 amount);
    /// @notice The channel's signer cannot be the zero address.
    error ZeroSigner();
    /// @notice A voucher must raise the cumulative amount already claimed.
    error VoucherNotIncreasing(uint256 channelId, uint256 claimed, uint256 cumulativeAmount);
    /// @notice A voucher cannot exceed the deposit.
    error VoucherExceedsDeposit(uint256 channelId, uint256 cumulativeAmount, uint256 deposit);
    /// @notice The voucher was not signed by the channel's signer (or for another chain/contract).
    error InvalidVoucherSignature(uint256 channelId);

    // ---------------------------------------------------------------- events

    /// @notice A channel was opened.
    event ChannelOpened(
        uint256 indexed channelId,
        uint256 indexed assetId,
        address indexed payer,
        address token,
        uint256 deposit,
        uint64 expiry,
        address signer
    );
    /// @notice The payer added `amount`; the deposit is now `deposit`.
    event ChannelToppedUp(uint256 indexed channelId, uint256 amount, uint256 deposit);
    /// @notice The payer moved the expiry later.
    event ChannelExtended(uint256 indexed channelId, uint64 expiry);
    /// @notice `amount` went to the asset's vault; `cumulativeAmount` is now claimed in total.
    event ChannelClaimed(uint256 indexed channelId, uint256 indexed assetId, uint256 amount, uint256 cumulativeAmount);
    /// @notice The channel ended; `refunded` went back to the payer.
    event ChannelSettled(uint256 indexed channelId, uint256 claimed, uint256 refunded);

    // ---------------------------------------------------------------- storage

    /// @notice EIP-712 type of a voucher.
    bytes32 public constant VOUCHER_TYPEHASH = keccak256("Voucher(uint256 channelId,uint256 cumulativeAmount)");

    /// @notice The marketplace whose assets channels pay for.
    Marketplace public immutable marketplace;
    /// @notice Number of channels opened; ids run from 1.
    uint256 public channelCount;
    /// @dev Channels by id.
    mapping(uint256 channelId => Channel) private _channels;

    // ---------------------------------------------------------------- constructor

    constructor(Marketplace marketplace_) EIP712("agentmarket PaymentChannels", "1") {
        marketplace = marketplace_;
    }

    // ---------------------------------------------------------------- external

    /// @notice Opens a channel for `assetId`, pulling `deposit` of `token` from the caller.
    function open(uint256 assetId, address token, uint256 deposit, uint64 expiry, address signer)
        external
        nonReentrant
        returns (uint256 channelId)
    {
        (address assetToken,) = marketplace.paymentTerms(assetId);
        if (token != assetToken) revert TokenMismatch(assetId, assetToken, token);
        if (deposit == 0 || deposit > type(uint128).max) revert InvalidAmount(deposit);
        if (expiry <= block.timestamp) revert InvalidExpiry(expiry, block.timestamp);
        if (signer == address(0)) revert ZeroSigner();
        channelId = ++channelCount;
        _channels[channelId] = Channel({
            payer: msg.sender,
            expiry: expiry,
            closed: false,
            signer: signer,
            token: token,
            deposit: uint128(deposit),
            claimed: 0,
            assetId: assetId
        });
        IERC20(token).safeTransferFrom(msg.sender, address(this), deposit);
        emit ChannelOpened(channelId, assetId, msg.sender, token, deposit, expiry, signer);
    }

    /// @notice Adds `amount` to the deposit (payer only, before expiry).
    function topUp(uint256 channelId, uint256 amount) external nonReentrant {
        Channel storage channel = _live(channelId);
        if (msg.sender != channel.payer) revert NotPayer(channelId, msg.sender);
        uint256 deposit = uint256(channel.deposit) + amount;
        if (amount == 0 || deposit > type(uint128).max) revert InvalidAmount(amount);
        channel.deposit = uint128(deposit);
        IERC20(channel.token).safeTransferFrom(msg.sender, address(this), amount);
        emit ChannelToppedUp(channelId, amount, deposit);
    }

    /// @notice Moves the expiry later (payer only, before expiry).
    function extend(uint256 channelId, uint64 newExpiry) external {
        Channel storage channel = _live(channelId);
        if (msg.sender != channel.payer) revert NotPayer(channelId, msg.sender);
        if (newExpiry <= channel.expiry) revert InvalidExpiry(newExpiry, channel.expiry);
        channel.expiry = newExpiry;
        emit ChannelExtended(channelId, newExpiry);
    }

    /// @notice Pays the increase over what was claimed into the asset's vault. Anyone may call:
    /// the money can only go to the vault.
    function claim(uint256 channelId, uint256 cumulativeAmount, bytes calldata signature) external nonReentrant {
        _claim(channelId, _live(channelId), cumulativeAmount, signature);
    }

    /// @notice After expiry, returns the unclaimed deposit to the payer (callable by anyone).
    function reclaim(uint256 channelId) external nonReentrant {
        Channel storage channel = _existing(channelId);
        if (channel.closed) revert ChannelClosed(channelId);
        if (block.timestamp < channel.expiry) revert ChannelNotExpired(channelId, channel.expiry);
        _settle(channelId, channel);
    }

    /// @notice The asset's owner closes early: a final claim (skipped if the voucher adds nothing
    /// or `signature` is empty), then the remainder back to the payer.
    function close(uint256 channelId, uint256 cumulativeAmount, bytes calldata signature) external nonReentrant {
        Channel storage channel = _live(channelId);
        if (msg.sender != marketplace.ownerOf(channel.assetId)) revert NotAssetOwner(channelId, msg.sender);
        if (signature.length > 0 && cumulativeAmount > channel.claimed) {
            _claim(channelId, channel, cumulativeAmount, signature);
        }
        _settle(channelId, channel);
    }

    // ---------------------------------------------------------------- views

    /// @notice A channel's state.
    function getChannel(uint256 channelId) external view returns (Channel memory) {
        return _existing(channelId);
    }

    /// @notice Who opened `channelId`, the asset it pays for, and how much has been claimed into
    /// that asset's vault so far (IChannelPayments). Reverts with UnknownChannel for an unknown id.
    function payment(uint256 channelId) external view returns (address payer, uint256 assetId, uint256 claimed) {
        Channel storage channel = _existing(channelId);
        return (channel.payer, channel.assetId, channel.claimed);
    }

    /// @notice The EIP-712 digest of a voucher, as the signer signs it.
    function voucherDigest(uint256 channelId, uint256 cumulativeAmount) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(VOUCHER_TYPEHASH, channelId, cumulativeAmount)));
    }

    // ---------------------------------------------------------------- internal

    function _existing(uint256 channelId) internal view returns (Channel storage channel) {
        channel = _channels[channelId];
        if (channel.payer == address(0)) revert UnknownChannel(channelId);
    }

    function _live(uint256 channelId) internal view returns (Channel storage channel) {
        channel = _existing(channelId);
        if (channel.closed) revert ChannelClosed(channelId);
        if (block.timestamp >= channel.expiry) revert ChannelExpired(channelId, channel.expiry);
    }

    function _claim(uint256 channelId, Channel storage channel, uint256 cumulativeAmount, bytes calldata signature)
        internal
    {
        uint256 claimed = channel.claimed;
        if (cumulativeAmount <= claimed) revert VoucherNotIncreasing(channelId, claimed, cumulativeAmount);
        if (cumulativeAmount > channel.deposit) {
            revert VoucherExceedsDeposit(channelId, cumulativeAmount, channel.deposit);
        }
        if (!SignatureChecker.isValidSignatureNow(
                channel.signer, voucherDigest(channelId, cumulativeAmount), signature
            )) {
            revert InvalidVoucherSignature(channelId);
        }
        channel.claimed = uint128(cumulativeAmount);
        uint256 amount = cumulativeAmount - claimed;
        uint256 assetId = channel.assetId;
        IERC20(channel.token).safeTransfer(marketplace.vaultOf(assetId), amount);
        emit ChannelClaimed(channelId, assetId, amount, cumulativeAmount);
    }

    function _settle(uint256 channelId, Channel storage channel) internal {
        channel.closed = true;
        uint256 refund = channel.deposit - channel.claimed;
        if (refund > 0) IERC20(channel.token).safeTransfer(channel.payer, refund);
        emit ChannelSettled(channelId, channel.claimed, refund);
    }
}
